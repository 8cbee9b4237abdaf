"""Write a planned LPR4M world in layout (a) ``lpr4m-release`` or (b) ``lpr750k`` of LAYOUT.md.

Pixels are written per livestream by :func:`write_live_pixels` (run in worker processes); the
annotation files are written afterwards by :func:`write_lpr4m_annotations` from the plan and the
per-frame boxes the renderer returned. With ``pixels=False`` (``lpr4m-scale``) no image is
written and boxes come from :func:`plausible_boxes` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from benchmark.core.atomic import atomic_write_text
from datasets.synthetic.catalog import CATEGORIES
from datasets.synthetic.knobs import Knobs, SizeSpec
from datasets.synthetic.plan import Clip, Live
from datasets.synthetic.render import jpeg_bytes, product_jpegs, render_live_clips
from datasets.synthetic.scene import DURATIONS, SCALES

RELEASE = "lpr4m-release"
LPR750K = "lpr750k"
Box = tuple[int, int, int, int]
ClipBoxes = tuple[list[Optional[Box]], list[list[Box]]]  # intent box per frame, other products' boxes per frame


def frame_ids(clip: Clip) -> list[str]:
    return [f"{clip.clip_id}-{k}" for k in range(clip.n_frames)]


def frame_rel(layout: str, live: Live, clip: Clip, frame_id: str) -> str:
    """Root-relative path of a frame file."""
    if layout == RELEASE:
        return f"frames/{clip.clip_id}/{frame_id}.jpg"
    if live.split == "train":
        return f"training_video_0{live.index % 8}/{clip.clip_id}/{frame_id}.jpg"
    return f"query/{clip.clip_id}/{frame_id}.jpg"


def image_rel(layout: str, live: Live, image_id: str) -> str:
    """Root-relative path of a shop image."""
    if layout == RELEASE:
        return f"images/{image_id}.jpg"
    if live.split == "train":
        return f"training_image/{image_id}.jpg"
    return f"gallery/{live.live_id}/{image_id}-0.jpg"


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_live_pixels(layout: str, live: Live, root: Path, size: SizeSpec, knobs: Knobs) -> dict[str, ClipBoxes]:
    """Render and write one livestream's shop images and clip frames; returns its clips' boxes."""
    for product in live.products:
        for image_id, data in product_jpegs(product, size.image_size, knobs).items():
            _write(root, image_rel(layout, live, image_id), data)
    out: dict[str, ClipBoxes] = {}
    for clip, render in render_live_clips(live, size.frame_size, knobs):
        for fid, frame in zip(frame_ids(clip), render.frames):
            _write(root, frame_rel(layout, live, clip, fid), jpeg_bytes(frame, clip.quality))
        out[clip.clip_id] = (render.boxes, render.distractor_boxes)
    return out


def plausible_boxes(clip: Clip, frame_size: tuple[int, int], knobs: Knobs) -> ClipBoxes:
    """Boxes without pixels (annotation-only sizes): scale and visibility as the renderer draws them."""
    rng = np.random.default_rng(clip.seed)
    w, h = frame_size
    unit = min(w, h) / 128.0
    side = rng.uniform(*knobs.scale_px[SCALES.index(clip.attrs.scale)]) * unit
    lo, hi = knobs.duration_frac[DURATIONS.index(clip.attrs.duration)]
    n = clip.n_frames
    n_vis = int(np.clip(round(rng.uniform(lo, hi) * n), 1, n))
    start = int(rng.integers(0, n - n_vis + 1))
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.38, 0.75) * h
    boxes: list[Optional[Box]] = []
    for t in range(n):
        if not start <= t < start + n_vis:
            boxes.append(None)
            continue
        bw, bh = side * rng.uniform(0.6, 1.0), side * rng.uniform(0.6, 1.0)
        x1 = int(np.clip(cx - bw / 2 + rng.normal(0, 2), 0, w - bw - 1))
        y1 = int(np.clip(cy - bh / 2 + rng.normal(0, 2), 0, h - bh - 1))
        boxes.append((x1, y1, x1 + max(1, int(bw)), y1 + max(1, int(bh))))
    return boxes, [[] for _ in range(n)]


def _box_list(box: Optional[Box]) -> list[int]:
    return [int(v) for v in box] if box is not None else []


def _dump(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def _tsv(fields: list[str]) -> str:
    return "\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields)


def _lines(rows: list[str]) -> str:
    return "".join(r + "\n" for r in rows)


def write_lpr4m_annotations(
    layout: str, lives: list[Live], boxes: dict[str, ClipBoxes], root: Path, frame_url_base: Optional[str] = None
) -> list[Path]:
    """Write the annotation files of ``layout``; returns their paths. With ``frame_url_base`` the
    release layout also gets the test frame URL list (its frame list; annotation-only sizes)."""
    ann = root / "annotations"
    train_rows: list[str] = []
    gt: dict[str, list[str]] = {}
    gallery: dict[str, list[str]] = {}
    gallery_lines: list[str] = []
    f2box: dict[str, object] = {}
    query_frames: dict[str, dict[str, object]] = {}
    asr_rows: list[str] = []
    title_rows: list[str] = []
    attr_rows: list[str] = []
    for live in lives:
        if live.split == "train":
            for clip in live.clips:
                prod = live.products[clip.intent]
                cat = CATEGORIES[prod.spec.category]
                fids = frame_ids(clip)
                intent_boxes = boxes[clip.clip_id][0]
                if layout == RELEASE:
                    train_rows.append(
                        _tsv(
                            [
                                clip.clip_id,
                                repr(fids),
                                repr([_box_list(b) for b in intent_boxes]),
                                prod.image_id,
                                prod.title,
                                str(cat.cid),
                                cat.name,
                                clip.asr,
                                clip.attrs.scale,
                                clip.attrs.duration,
                                clip.attrs.number,
                            ]
                        )
                    )
                else:
                    rels = [frame_rel(layout, live, clip, f) for f in fids]
                    train_rows.append(
                        _tsv(
                            [
                                clip.clip_id,
                                repr(rels),
                                "-",
                                prod.image_id,
                                image_rel(layout, live, prod.image_id),
                                prod.title,
                                str(cat.cid),
                                cat.name,
                                f"spu{prod.image_id[:8]}",
                                clip.asr,
                            ]
                        )
                    )
            continue
        # test livestream: gallery group in a shuffled (but fixed) order, then its queries
        ids = [i for p in live.products for i in p.image_ids]
        order = np.random.default_rng(live.stage_seed).permutation(len(ids))
        group = [ids[j] for j in order]
        gallery[live.live_id] = group
        by_id = {i: p for p in live.products for i in p.image_ids}
        for image_id in group:
            prod = by_id[image_id]
            title_rows.append(_tsv([image_id, prod.title, CATEGORIES[prod.spec.category].name]))
            gallery_lines.append(f"{live.live_id}/{image_id}-0.jpg")
        for clip in live.clips:
            prod = live.products[clip.intent]
            cat = CATEGORIES[prod.spec.category]
            gt[clip.clip_id] = list(prod.image_ids)
            intent_boxes, other_boxes = boxes[clip.clip_id]
            fids = frame_ids(clip)
            for fid, ib, ob in zip(fids, intent_boxes, other_boxes):
                # the intent box first, then the other products' boxes (LAYOUT: first = intent)
                f2box[fid] = (
                    ([_box_list(ib)] + [_box_list(b) for b in ob]) if (ib is not None and ob) else _box_list(ib)
                )
            if layout == LPR750K:
                query_frames[clip.clip_id] = {
                    "frames": [f"{clip.clip_id}/{f}.jpg" for f in fids],
                    "gt": list(prod.image_ids),
                }
            asr_rows.append(_tsv([clip.clip_id, clip.asr]))
            attr_rows.append(
                _tsv([clip.clip_id, str(cat.cid), cat.name, clip.attrs.scale, clip.attrs.duration, clip.attrs.number])
            )
    n_q = len(gt)
    files = {
        f"training_videoinfo_{len(train_rows)}.txt": _lines(train_rows),
        f"test_videoid_to_gtimage_{n_q}.json": _dump(gt),
        f"test_frameid2gtbox_{n_q}.json": _dump(f2box),
        f"test_videoid_asr_{n_q}.txt": _lines(asr_rows),
        f"test_image_title_{len(title_rows)}.txt": _lines(title_rows),
        f"test_videoid_attributes_{n_q}.txt": _lines(attr_rows),
    }
    if layout == RELEASE:
        files[f"test_liveid_to_gallery_{len(gallery)}.json"] = _dump(gallery)
        if frame_url_base is not None:
            urls = [f"{frame_url_base}{fid}.jpg" for fid in f2box]
            files[f"test_frame_url_{len(urls)}.txt"] = _lines(urls)
    else:
        files["query_tenframes.json"] = _dump(query_frames)
        files["gallery_main.txt"] = _lines(gallery_lines)
    written = []
    for name, text in files.items():
        written.append(atomic_write_text(ann / name, text))
    return written
