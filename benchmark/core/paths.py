"""Where the repository is: the root that code hashes, provenance and ``reproduce`` are relative to."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
