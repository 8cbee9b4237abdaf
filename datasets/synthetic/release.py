"""The synthetic LPR4M release: what the authors ship, written from a generated ``lpr4m-release`` root.

``synth --layout lpr4m --release`` (and the HTTP end-to-end test) turn a generated root, which is
already in the loader's layout, into the release format of the dataset README
(github.com/adxcreative/RICE), so that the real ``prepare`` step is what makes the loader's layout:

``<out>/urls/``: the four URL lists ``training_frame_url_<n>.txt``, ``training_image_url_<n>.txt``,
``test_frame_url_<n>.txt``, ``test_image_url_<n>.txt`` (``<base_url><file name>``, one a line);
the annotations under the release's names: the training rows in ten part files
``training_videoinfo_full_part_0i.txt`` with boxes kept on one row in ``boxed_every`` only (the
release boxes a detection subset), ``test_frameid2gtbox_<clips>_<boxed frames>.json`` holding only
the frames that have a box, the ground truth, galleries, ASR and titles (and our per-clip
attribute list, which the real release lacks). ``<out>/www/``: every file a URL names.

With ``original_size=(W, H)`` (a knob the tests use: e.g. a 144 x 256 portrait) frames are written
at that size and boxes are given in those original pixels; img2dataset then stores them with the
shortest side 256 and the loader rescales the boxes with the sidecar. The default generated sets
are not touched: this reads a root and writes elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from benchmark.core.atomic import atomic_write_text
from datasets.annotation_io import parse_box, parse_literal_list
from datasets.decoding import jpeg_size

PARTS = 10


def _one(ann: Path, pattern: str) -> Path:
    found = sorted(ann.glob(pattern))
    if len(found) != 1:
        raise ValueError(f"{ann}: expected one {pattern}, found {len(found)}")
    return found[0]


def _scale(box: Any, sx: float, sy: float) -> Optional[list[int]]:
    parsed = parse_box(box)
    if parsed is None:
        return None
    x1, y1, x2, y2 = parsed
    return [int(round(x1 * sx)), int(round(y1 * sy)), int(round(x2 * sx)), int(round(y2 * sy))]


def _media(src: Path, dst: Path, size: Optional[tuple[int, int]]) -> None:
    if dst.exists():  # written by an earlier run of the same release
        return
    if size is None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        return
    with Image.open(src) as img:
        img.convert("RGB").resize(size, Image.BILINEAR).save(dst, "JPEG", quality=95)


def write_release(
    root: Path, out: Path, *, base_url: str, original_size: Optional[tuple[int, int]] = None, boxed_every: int = 3
) -> dict[str, int]:
    """Write the release of the generated root ``root`` to ``out`` (``urls/`` and ``www/``); counts."""
    root, out = Path(root), Path(out)
    ann = root / "annotations"
    urls, www = out / "urls", out / "www"
    urls.mkdir(parents=True, exist_ok=True)
    www.mkdir(parents=True, exist_ok=True)
    first = next((root / "frames").glob("*/*.jpg"))
    stored = jpeg_size(first.read_bytes()) or (1, 1)
    sx, sy = (original_size[0] / stored[0], original_size[1] / stored[1]) if original_size else (1.0, 1.0)

    rows = [r for r in _one(ann, "training_videoinfo_*.txt").read_text(encoding="utf-8").split("\n") if r]
    train_frames: list[str] = []
    train_images: dict[str, None] = {}
    out_rows = []
    for i, row in enumerate(rows):
        cols = row.split("\t")
        fids = parse_literal_list(cols[1])
        boxes = [_scale(b, sx, sy) for b in parse_literal_list(cols[2])]
        cols[2] = json.dumps([b or [] for b in boxes]) if i % boxed_every == 0 and any(boxes) else "[]"
        out_rows.append("\t".join(cols))
        train_frames.extend(fids)
        train_images.setdefault(cols[3], None)
    per = max(1, math.ceil(len(out_rows) / PARTS))
    for p in range(PARTS):
        chunk = out_rows[p * per : (p + 1) * per]
        atomic_write_text(urls / f"training_videoinfo_full_part_{p:02d}.txt", "".join(r + "\n" for r in chunk))

    gt_path = _one(ann, "test_videoid_to_gtimage_*.json")
    gallery_path = _one(ann, "test_liveid_to_gallery_*.json")
    gt = json.loads(gt_path.read_text(encoding="utf-8"))
    gallery = json.loads(gallery_path.read_text(encoding="utf-8"))
    boxes_in = json.loads(_one(ann, "test_frameid2gtbox_*.json").read_text(encoding="utf-8"))
    boxed = {}
    for fid, value in boxes_in.items():
        first_box = _scale(value[0] if value and isinstance(value[0], list) else value, sx, sy)
        if first_box is not None:
            boxed[fid] = [first_box]
    atomic_write_text(urls / f"test_frameid2gtbox_{len(gt)}_{len(boxed)}.json", json.dumps(boxed) + "\n")
    for src in (
        gt_path,
        gallery_path,
        *ann.glob("test_videoid_asr_*.txt"),
        *ann.glob("test_image_title_*.txt"),
        *ann.glob("test_videoid_attributes_*.txt"),
    ):
        shutil.copyfile(src, urls / src.name)
    test_frames = sorted(
        (f.stem for clip in gt for f in (root / "frames" / clip).glob("*.jpg")),
        key=lambda s: (s.rsplit("-", 1)[0], int(s.rsplit("-", 1)[1])),
    )
    test_images = list(dict.fromkeys(i for ids in gallery.values() for i in ids))

    def url_list(prefix: str, stems: list[str]) -> None:
        atomic_write_text(urls / f"{prefix}_{len(stems)}.txt", "".join(f"{base_url}{s}.jpg\n" for s in stems))

    url_list("training_frame_url", train_frames)
    url_list("training_image_url", list(train_images))
    url_list("test_frame_url", test_frames)
    url_list("test_image_url", test_images)
    for fid in train_frames + test_frames:
        _media(root / "frames" / fid.rsplit("-", 1)[0] / f"{fid}.jpg", www / f"{fid}.jpg", original_size)
    for image_id in list(train_images) + test_images:
        _media(root / "images" / f"{image_id}.jpg", www / f"{image_id}.jpg", None)
    return {
        "training_frames": len(train_frames),
        "training_images": len(train_images),
        "test_frames": len(test_frames),
        "test_images": len(test_images),
        "training_rows": len(out_rows),
        "boxed_test_frames": len(boxed),
    }
