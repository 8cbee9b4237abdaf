"""Retrieval methods, one module each; shared blocks in ``base``, ``encoders``, ``losses``."""
