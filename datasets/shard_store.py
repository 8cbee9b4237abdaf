"""Frames and shop images kept in img2dataset's webdataset tar shards, found by an index.

A root prepared with ``prepare --format webdataset`` holds ``shards/<NNNNN>.tar`` (img2dataset's
``--output_format webdataset``: per sample ``<key>.jpg`` and its sidecar ``<key>.json``) and
``shards/index.tsv``, one line per frame or image: ``<frame or image id> \\t <shard> \\t <key>``.
The loader names a sharded frame by a member path, ``<root>/shards/<shard>.tar/<key>.jpg``, so
every consumer that reads files through :func:`datasets.decoding.read_bytes` (the test split,
check-data, browse, the frame cache) finds it: :func:`read_member` seeks to the member in the
tar (the member table of each tar is read once per process, from the tar headers only).

A truncated or corrupt shard (:func:`verify_shard`: a member whose data runs past the end of
the file, a header that does not parse where the next member or the end-of-archive blocks
belong) is named in one line by ``check-data``; a run that reads from it refuses (``DataError``
naming the shard), never skips it silently.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Optional

from datasets import faults as F
from datasets.errors import DataError

INDEX_NAME = "index.tsv"
BLOCK = 512
CORRUPT_SHARD = "corrupt_shard"

_TABLES: dict[str, dict[str, tuple[int, int]]] = {}  # per process: tar path -> {member: (offset, size)}


def index_path(root: Path) -> Path:
    return Path(root) / "shards" / INDEX_NAME


def load_index(root: Path) -> dict[str, tuple[str, str]]:
    """{frame or image id: (shard file name, key)} of a sharded root; ``DataError`` when absent or malformed."""
    path = index_path(root)
    out: dict[str, tuple[str, str]] = {}
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path}: the shard index is missing (prepare --format webdataset writes it)",
            path=path,
            kind=F.MISSING_ANNOTATION,
        ) from None
    with fh:
        for i, line in enumerate(fh, start=1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 3 or not all(cols):
                raise DataError(
                    f"{path}:{i}: expected <id> <shard> <key>, got {line.strip()!r}", path=path, kind=F.MALFORMED_ROW
                )
            out.setdefault(cols[0], (cols[1], cols[2]))
    return out


def member_path(root: Path, shard: str, key: str) -> Path:
    return Path(root) / "shards" / shard / f"{key}.jpg"


def split_member(path: Path) -> Optional[tuple[Path, str]]:
    """``(tar, member name)`` of a member path ``.../<shard>.tar/<member>``, else None."""
    path = Path(path)
    return (path.parent, path.name) if path.parent.suffix == ".tar" else None


def stat_target(path: Path) -> Path:
    """The file whose size and time stand for ``path``: its tar for a member path, else itself."""
    member = split_member(path)
    return member[0] if member is not None and member[0].is_file() else Path(path)


def read_path(path: Path) -> bytes:
    """A file's bytes, or a member's (``<shard>.tar/<member>``); ``FileNotFoundError`` when
    either is missing, ``DataError`` naming the shard when it is cut short or corrupt."""
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        member = split_member(path)
        if member is None or not member[0].is_file() or member[1] not in _members(member[0]):
            raise FileNotFoundError(str(path)) from None
        return read_member(path)


def _members(tar: Path) -> dict[str, tuple[int, int]]:
    table = _TABLES.get(str(tar))
    if table is None:
        try:
            with tarfile.open(tar, "r:") as tf:
                table = {m.name: (m.offset_data, m.size) for m in tf if m.isfile()}
        except FileNotFoundError:
            raise DataError(f"{tar}: shard is missing", path=tar, kind=F.MISSING_FILE) from None
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{tar}: corrupt shard ({e})", path=tar, kind=CORRUPT_SHARD) from None
        _TABLES[str(tar)] = table
    return table


def read_member(path: Path) -> bytes:
    """The bytes of the member ``path`` names; ``DataError`` naming the shard when it lacks it or is cut short."""
    tar, name = split_member(path) or (Path(path).parent, Path(path).name)
    entry = _members(tar).get(name)
    if entry is None:
        raise DataError(
            f"{path}: file is missing (shard {tar.name} has no member {name})", path=path, kind=F.MISSING_FILE
        )
    offset, size = entry
    with open(tar, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        raise DataError(
            f"{tar}: truncated shard (member {name} ends past the end of the file)", path=tar, kind=CORRUPT_SHARD
        )
    return data


def verify_shard(tar: Path) -> Optional[str]:
    """None for a sound shard, else the fault (one clause): truncated, or a corrupt header at a byte offset."""
    size = os.path.getsize(tar)
    end = 0
    count = 0
    try:
        with tarfile.open(tar, "r:") as tf:
            for m in tf:
                count += 1
                end = m.offset_data + -(-m.size // BLOCK) * BLOCK
    except (tarfile.TarError, OSError) as e:
        cut = "end of data" in str(e) or "truncated" in str(e)
        return f"{'truncated' if cut else 'corrupt'} shard ({e}, after {count} members)"
    if end > size:
        return f"truncated shard: member {count} ends at byte {end}, the file has {size}"
    with open(tar, "rb") as fh:
        fh.seek(end)
        trailer = fh.read(2 * BLOCK)
    if len(trailer) < 2 * BLOCK:
        return f"truncated shard: {count} members, then the file ends at byte {size} without the end-of-archive blocks"
    if trailer.strip(b"\0"):
        return f"corrupt shard: no valid tar header at byte {end} (after {count} members)"
    return None


def forget_tables() -> None:
    """Drop the cached member tables (a test that rewrites a shard in place)."""
    _TABLES.clear()
