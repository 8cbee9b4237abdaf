"""Synthetic livestream generator writing the real LPR4M and MovingFashion layouts."""
