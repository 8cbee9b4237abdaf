"""The ``prepare`` path that skips HTTP: release files already on disk, resized as img2dataset does.

A synthetic release (``datasets/synthetic/release.py``) serves its files from ``<release>/www/``
(a URL's file name is its path there). :func:`resize_from_disk` reads each one and passes it to
img2dataset's own ``Resizer`` with the settings ``prepare`` gives img2dataset (image size 256,
``keep_ratio``, its default interpolation and JPEG quality 95), then writes the frame or image and
the sidecar JSON where the layout pass would put them: the loader input is byte-identical to a
download over HTTP. A missing file counts as a failed URL.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
from pathlib import Path
from typing import Optional

from datasets.release_files import PrepareError, layout_target


def _write(dst: Path, data: bytes) -> None:
    """Write-then-rename (no fsync: tens of thousands of small files; a rerun rewrites them)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(dst)


def resizer_like_img2dataset():
    try:
        from img2dataset.resizer import Resizer  # noqa: PLC0415  (optional: the prepare extra)
    except ImportError:  # pragma: no cover - the prepare extra is missing
        raise PrepareError("img2dataset is not installed: pip install -e '.[prepare]' (it pins img2dataset)") from None
    return Resizer(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=False)


def resize_one(resizer, www: Path, url: str, stem: str) -> Optional[tuple[bytes, dict]]:
    """The file a URL names, resized as img2dataset does, and its sidecar; None when missing or undecodable."""
    src = Path(www) / url.rsplit("/", 1)[-1].split("?", 1)[0]
    if not src.is_file():
        return None
    img, width, height, ow, oh, err = resizer(io.BytesIO(src.read_bytes()))
    if err is not None or img is None:
        return None
    meta = {
        "url": url,
        "key": stem,
        "status": "success",
        "error_message": None,
        "width": width,
        "height": height,
        "original_width": ow,
        "original_height": oh,
        "exif": None,
        "sha256": hashlib.sha256(img).hexdigest(),
    }
    return img, meta


def _resize_chunk(task: tuple[list[tuple[str, str]], str, str, str]) -> list[str]:
    """Resize one chunk of (stem, url) in this process (img2dataset's Resizer silences fds 1 and 2
    around each call, which is not thread-safe: one Resizer a process, as img2dataset runs it)."""
    items, www, root, kind = task
    resizer = resizer_like_img2dataset()
    done = []
    for stem, url in items:
        dst = layout_target(Path(root), kind, stem)
        got = resize_one(resizer, Path(www), url, stem) if dst is not None else None
        if got is None:
            continue
        img, meta = got
        dst.parent.mkdir(parents=True, exist_ok=True)
        _write(dst, img)
        if kind == "frame":
            _write(dst.with_suffix(".json"), json.dumps(meta, indent=4).encode("utf-8"))
        done.append(stem)
    return done


def resize_from_disk(
    lists: dict[str, tuple[dict[str, str], str]], www: Path, root: Path, *, workers: int = 2
) -> dict[str, set[str]]:
    """Resize every URL's file of every list (``{prefix: ({stem: url}, kind)}``) from ``www`` into
    the layout of ``root``; returns the stems written per list. img2dataset is imported once,
    before the worker processes fork (its import costs seconds)."""
    resizer_like_img2dataset()
    n = max(1, workers)
    tasks, owners = [], []
    for prefix, (urls, kind) in lists.items():
        items = sorted(urls.items())
        for i in range(n):
            tasks.append((items[i::n], str(www), str(root), kind))
            owners.append(prefix)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(n) as pool:
        parts = pool.map(_resize_chunk, tasks, chunksize=1)
    out: dict[str, set[str]] = {prefix: set() for prefix in lists}
    for prefix, part in zip(owners, parts):
        out[prefix].update(part)
    return out
