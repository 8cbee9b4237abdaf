"""A file's SHA-256: the one function that names files by content across the harness (external
embedding files, checkpoints, the re-scoring cache, the frame cache, the synthetic sets' manifests)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Union


def sha256_file(path: Union[str, Path]) -> str:
    """Hex SHA-256 of the file's bytes, read in chunks (files can be hundreds of MB)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
