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

import os
import stat
from pathlib import Path
from typing import Any

from benchmark.core.digest import sha256_file


def _files(root: Path, skip: str) -> dict[str, str]:
    """Every entry under ``root`` but ``skip`` (top level): POSIX relative path -> path. Links
    to folders are listed too (as themselves, never followed), so that they fail the check."""
    out: dict[str, str] = {}
    base = str(root)
    for folder, dirs, names in os.walk(base, followlinks=False):
        rel_folder = os.path.relpath(folder, base).replace(os.sep, "/")
        prefix = "" if rel_folder == "." else rel_folder + "/"
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            out[prefix + name] = os.path.join(folder, name)
    out.pop(skip, None)
    return dict(sorted(out.items()))


def content_record(root: Path, skip: str) -> dict[str, list[Any]]:
    """``{relative path: [size, sha256]}`` of every file under ``root`` except ``skip``."""
    return {rel: [os.path.getsize(path), sha256_file(path)] for rel, path in _files(root, skip).items()}


def content_problem(root: Path, record: Any, skip: str) -> str | None:
    """Why ``root`` does not hold the files ``record`` lists (None when it does)."""
    if not isinstance(record, dict) or not record:
        return "its manifest records no content hashes"
    found = _files(root, skip)
    missing, extra = sorted(set(record) - set(found)), sorted(set(found) - set(record))
    if missing or extra:
        name = (missing or extra)[0]
        return f"{len(missing)} file(s) missing, {len(extra)} not generated (e.g. {name})"
    for rel, path in found.items():
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return f"{rel} is not a regular file"
        entry = record[rel]
        size, digest = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
        if info.st_size != size:
            return f"{rel} has {info.st_size} bytes, {size} generated"
        if sha256_file(path) != digest:
            return f"{rel} differs from the generated file (sha256)"
    return None
