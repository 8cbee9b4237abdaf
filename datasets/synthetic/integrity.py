"""Content hashes of a generated synthetic root, so that a cached set is verified before use.

A cached root is found by its parameter hash (:func:`datasets.synthetic.knobs.params_hash`, in
its folder name and manifest), but the name says nothing of the bytes inside: a file changed,
truncated, removed or added after generation (by hand, by a crashed copy, or by another
checkout's code writing into a shared ``LPR_BENCH_CACHE``) would otherwise be read as the set
the key names. :func:`content_record` lists every file of a root with its size and SHA-256;
the generator stores it in the manifest, which it writes atomically after every other file,
and :func:`content_problem` compares a root with its record on every reuse.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path, skip: str) -> dict[str, Path]:
    """Every entry under ``root`` but ``skip`` (top level), by POSIX relative path; symlinks
    and other non-regular files are listed too (as themselves), so that they fail the check."""
    out: dict[str, Path] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel != skip:
                out[rel] = path
    return out


def content_record(root: Path, skip: str) -> dict[str, list[Any]]:
    """``{relative path: [size, sha256]}`` of every file under ``root`` except ``skip``."""
    return {rel: [path.stat().st_size, _sha256(path)] for rel, path in _files(root, skip).items()}


def content_problem(root: Path, record: Any, skip: str) -> Optional[str]:
    """Why ``root`` does not hold the files ``record`` lists (None when it does)."""
    if not isinstance(record, dict) or not record:
        return "its manifest records no content hashes"
    found = _files(root, skip)
    missing, extra = sorted(set(record) - set(found)), sorted(set(found) - set(record))
    if missing or extra:
        name = (missing or extra)[0]
        return f"{len(missing)} file(s) missing, {len(extra)} not generated (e.g. {name})"
    for rel, path in found.items():
        if path.is_symlink() or not path.is_file():
            return f"{rel} is not a regular file"
        size, digest = record[rel] if isinstance(record[rel], list) and len(record[rel]) == 2 else (None, None)
        if path.stat().st_size != size:
            return f"{rel} has {path.stat().st_size} bytes, {size} generated"
        if _sha256(path) != digest:
            return f"{rel} differs from the generated file (sha256)"
    return None
