"""Helpers shared by the synthetic generator's tests: the ``tiny`` size, a tree's file hashes, and
a generated root's ``truth.json`` / ``manifest.json`` read back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets.synthetic.generate import MANIFEST, TRUTH
from datasets.synthetic.knobs import SIZES

TINY = SIZES["tiny"]


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative POSIX path) mapped to its SHA-256."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def truth(root: Path) -> dict:
    return json.loads((root / TRUTH).read_text())


def manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())
