"""``prepare --format webdataset``: keep img2dataset's tar shards and index them, no per-frame files.

At full scale the files layout is a JPEG and a JSON sidecar per frame (947 million files for the
release's training frames: more inodes than a default ext4 file system of 4 TB has, see
docs/full-scale.md). Shards keep img2dataset's ``--output_format webdataset`` tars as they are;
:func:`index_shards` reads each finished tar's sidecars (``status`` success, the URL's file stem
names the frame or image) and writes ``shards/index.tsv`` (:mod:`datasets.shard_store`), by
which the loader names each frame's member. :func:`shards_from_disk` is the path without HTTP
(the synthetic release): each URL's file resized by img2dataset's own ``Resizer``
(:mod:`datasets.prepare_fast`) and written with ``webdataset.TarWriter`` in img2dataset's member
and key format (``<shard:05d><index in shard>``, one shard never spans two URL lists), so both
paths give the same tars.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import tarfile
from pathlib import Path

import webdataset as wds

from benchmark.core.atomic import atomic_write_text
from datasets.prepare_fast import resize_one, resizer_like_img2dataset
from datasets.release_files import url_stem
from datasets.shard_store import INDEX_NAME


def _write_index(shard_dir: Path, rows: list[tuple[str, str, str]]) -> None:
    atomic_write_text(shard_dir / INDEX_NAME, "".join(f"{s}\t{shard}\t{key}\n" for s, shard, key in rows))


def _shard_rows(tar: Path) -> list[tuple[str, str, str]]:
    """(stem, shard, key) of each successful sample of one img2dataset tar."""
    rows = []
    with tarfile.open(tar, "r:") as tf:
        for m in tf:
            if not m.name.endswith(".json") or not m.isfile():
                continue
            fh = tf.extractfile(m)
            try:
                meta = json.loads(fh.read()) if fh is not None else None
            except ValueError:
                continue
            if isinstance(meta, dict) and meta.get("status") == "success" and meta.get("url"):
                rows.append((url_stem(str(meta["url"])), tar.name, m.name[:-5]))
    return rows


def index_shards(shard_dir: Path, image_stems: set[str]) -> set[str]:
    """Index every finished tar of ``shard_dir`` (``<shard>_stats.json`` beside it); the stems indexed."""
    rows: list[tuple[str, str, str]] = []
    for tar in sorted(shard_dir.glob("*.tar")):
        if (shard_dir / f"{tar.stem}_stats.json").exists():
            rows.extend(_shard_rows(tar))
    _write_index(shard_dir, rows)
    return {r[0] for r in rows}


def _shard_task(task: tuple[int, list[tuple[str, str]], str, str, int]) -> list[tuple[str, str, str]]:
    """Resize one shard's (stem, url) items and write ``<shard:05d>.tar`` (written aside, renamed in place)."""
    shard_id, items, www, shard_dir, digits = task
    resizer = resizer_like_img2dataset()
    name = f"{shard_id:05d}.tar"
    tmp = Path(shard_dir) / f".{name}.tmp"
    rows = []
    with wds.TarWriter(str(tmp)) as sink:
        for i, (stem, url) in enumerate(items):
            got = resize_one(resizer, Path(www), url, stem)
            if got is None:
                continue
            key = f"{shard_id:05d}{i:0{digits}d}"
            img, meta = got
            meta["key"] = key
            sink.write({"__key__": key, "jpg": img, "json": json.dumps(meta).encode("utf-8")})
            rows.append((stem, name, key))
    os.replace(tmp, Path(shard_dir) / name)
    atomic_write_text(
        Path(shard_dir) / f"{shard_id:05d}_stats.json", json.dumps({"count": len(items), "successes": len(rows)}) + "\n"
    )
    return rows


def shards_from_disk(
    lists: dict[str, tuple[dict[str, str], str]],
    www: Path,
    shard_dir: Path,
    *,
    shard_size: int = 10000,
    workers: int = 2,
) -> dict[str, set[str]]:
    """Shards of every list (``{prefix: ({stem: url}, kind)}``, URLs in list order) resized from
    ``www``, and their index; returns the stems written per list."""
    resizer_like_img2dataset()  # import img2dataset once, before the workers fork
    shard_dir.mkdir(parents=True, exist_ok=True)
    digits = len(str(max(1, shard_size - 1)))
    tasks, owners = [], []
    for prefix, (urls, _kind) in lists.items():
        items = list(urls.items())
        for start in range(0, len(items), shard_size):
            tasks.append((len(tasks), items[start : start + shard_size], str(www), str(shard_dir), digits))
            owners.append(prefix)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(max(1, workers)) as pool:
        parts = pool.map(_shard_task, tasks, chunksize=1)
    _write_index(shard_dir, [r for part in parts for r in part])
    out: dict[str, set[str]] = {prefix: set() for prefix in lists}
    for prefix, part in zip(owners, parts):
        out[prefix].update(r[0] for r in part)
    return out
