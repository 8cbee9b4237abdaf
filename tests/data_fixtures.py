"""Tiny on-disk datasets for tests, written in the layouts of ``datasets/LAYOUT.md``.

``make_lpr4m_release``, ``make_lpr750k`` and ``make_movingfashion`` write a small, valid dataset
into a folder (JPEGs with Pillow, mp4s with PyAV) and return a manifest of what they wrote, so that
tests can assert loaded records against it. Sizes are tiny so that a test builds one in well
under a second. Importable by any test: ``from tests.data_fixtures import make_lpr4m_release``.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

SCALES = ("small", "medium", "large")
DURATIONS = ("short", "medium", "long")
NUMBERS = ("single", "few", "many")


def uuid_like(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


def write_jpeg(
    path: Path,
    size: tuple[int, int],
    color: Sequence[int],
    *,
    quality: int = 90,
    mark: Optional[tuple[int, int, int, int]] = None,
) -> None:
    """A solid-colour JPEG of ``size`` = (W, H), with an optional white rectangle ``mark`` (xyxy)."""
    w, h = size
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[:] = np.asarray(color, dtype=np.uint8)
    if mark is not None:
        x1, y1, x2, y2 = mark
        arr[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=quality)


def write_mp4(path: Path, num_frames: int, fps: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> None:
    """An mp4 (mpeg4 codec) whose frame i has mean brightness proportional to i (decodable check)."""
    import av

    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(num_frames):
            value = int(20 + 200 * i / max(1, num_frames - 1))
            arr = np.full((h, w, 3), value, dtype=np.uint8)
            arr[:, : w // 4, seed % 3] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _color(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(30, 226), rng.randrange(30, 226), rng.randrange(30, 226))


@dataclass
class LPR4MManifest:
    root: Path
    train: list[dict] = field(
        default_factory=list
    )  # {clip_id, frame_ids, boxes, image_id, category, attrs, asr, title}
    queries: list[dict] = field(default_factory=list)  # {clip_id, live_id, frame_ids, boxes, gt, asr, attrs}
    gallery: dict[str, list[str]] = field(default_factory=dict)  # live_id -> image ids
    titles: dict[str, str] = field(default_factory=dict)
    frame_size: tuple[int, int] = (96, 64)


def make_lpr4m_release(
    root: Path,
    *,
    num_lives: int = 2,
    clips_per_live: int = 3,
    images_per_live: int = 4,
    frame_counts: Sequence[int] = (12, 5, 10),
    frame_size: tuple[int, int] = (96, 64),
    image_size: tuple[int, int] = (80, 100),
    seed: int = 0,
) -> LPR4MManifest:
    """A small valid LPR4M-release data root (layout (a) of ``datasets/LAYOUT.md``)."""
    rng = random.Random(seed)
    root = Path(root)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    man = LPR4MManifest(root=root, frame_size=frame_size)
    w, h = frame_size
    train_rows, f2box, gt_map, asr_rows, title_rows, attr_rows = [], {}, {}, [], [], []
    clip_no = 0
    for split in ("train", "test"):
        for _ in range(num_lives):
            live = uuid_like(rng)
            images = [uuid_like(rng) for _ in range(images_per_live)]
            colors = {i: _color(rng) for i in images}
            for img in images:
                write_jpeg(root / "images" / f"{img}.jpg", image_size, colors[img])
            if split == "test":
                man.gallery[live] = images
            for c in range(clips_per_live):
                n = frame_counts[clip_no % len(frame_counts)]
                start = 1000 * clip_no
                clip = f"{live}-{start}-{start + 5000}"
                frame_ids = [f"{clip}-{k}" for k in range(n)]
                gt = images[c % len(images)]
                boxes = []
                for k, fid in enumerate(frame_ids):
                    box = [8 + k, 6, 40 + k, 30] if k % 3 != 2 else []
                    boxes.append(box)
                    write_jpeg(
                        root / "frames" / clip / f"{fid}.jpg", frame_size, colors[gt], mark=tuple(box) if box else None
                    )  # type: ignore[arg-type]
                cat_id = clip_no % 3
                cat = ["女装", "beauty", "shoes"][cat_id]
                attrs = {
                    "scale": SCALES[clip_no % 3],
                    "duration": DURATIONS[(clip_no + 1) % 3],
                    "num_products": NUMBERS[(clip_no + 2) % 3],
                }
                asr = f"主播讲解 product {clip_no} 😀"
                title = f"title of {gt} 标题"
                man.titles[gt] = title
                if split == "train":
                    train_rows.append(
                        "\t".join(
                            [
                                clip,
                                repr(frame_ids),
                                repr(boxes),
                                gt,
                                title,
                                str(cat_id),
                                cat,
                                asr,
                                attrs["scale"],
                                attrs["duration"],
                                attrs["num_products"],
                            ]
                        )
                    )
                    man.train.append(
                        dict(
                            clip_id=clip,
                            frame_ids=frame_ids,
                            boxes=boxes,
                            image_id=gt,
                            category=cat,
                            attrs=dict(attrs, category=cat),
                            asr=asr,
                            title=title,
                        )
                    )
                else:
                    gts = [gt] if c % 2 == 0 else [gt, images[(c + 1) % len(images)]]
                    gt_map[clip] = gts
                    for fid, box in reversed(list(zip(frame_ids, boxes))):  # key order != frame order
                        f2box[fid] = box
                    asr_rows.append(f"{clip}\t{asr}")
                    attr_rows.append(
                        "\t".join([clip, str(cat_id), cat, attrs["scale"], attrs["duration"], attrs["num_products"]])
                    )
                    man.queries.append(
                        dict(
                            clip_id=clip,
                            live_id=live,
                            frame_ids=frame_ids,
                            boxes=boxes,
                            gt=gts,
                            asr=asr,
                            attrs=dict(attrs, category=cat),
                        )
                    )
                clip_no += 1
            if split == "test":
                for img in images:
                    man.titles.setdefault(img, f"title of {img} 标题")
                    title_rows.append(f"{img}\t{man.titles[img]}")
    n_q = len(gt_map)
    (ann / f"training_videoinfo_{len(train_rows)}.txt").write_text("\n".join(train_rows) + "\n", encoding="utf-8")
    _dump(ann / f"test_videoid_to_gtimage_{n_q}.json", gt_map)
    _dump(ann / f"test_liveid_to_gallery_{len(man.gallery)}.json", man.gallery)
    _dump(ann / f"test_frameid2gtbox_{len(f2box)}.json", f2box)
    (ann / f"test_videoid_asr_{n_q}.txt").write_text("\n".join(asr_rows) + "\n", encoding="utf-8")
    (ann / f"test_image_title_{len(title_rows)}.txt").write_text("\n".join(title_rows) + "\n", encoding="utf-8")
    (ann / f"test_videoid_attributes_{n_q}.txt").write_text("\n".join(attr_rows) + "\n", encoding="utf-8")
    return man


def make_lpr750k(
    root: Path,
    *,
    num_lives: int = 2,
    clips_per_live: int = 2,
    images_per_live: int = 3,
    frames_per_clip: int = 6,
    seed: int = 1,
) -> LPR4MManifest:
    """A small valid LPR750K data root (layout (b) of ``datasets/LAYOUT.md``)."""
    rng = random.Random(seed)
    root = Path(root)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    man = LPR4MManifest(root=root)
    rows, queries, gallery_lines = [], {}, []
    n = 0
    for split in ("train", "test"):
        for _ in range(num_lives):
            live = uuid_like(rng)
            images = [uuid_like(rng) for _ in range(images_per_live)]
            colors = {i: _color(rng) for i in images}
            if split == "test":
                man.gallery[live] = images
                for img in images:
                    write_jpeg(root / "gallery" / live / f"{img}-0.jpg", (70, 90), colors[img])
                    gallery_lines.append(f"{live}/{img}-0.jpg")
            for c in range(clips_per_live):
                clip = f"{live}-{n * 1000}-{n * 1000 + 3000}"
                gt = images[c % len(images)]
                frame_ids = [f"{clip}-{k}" for k in range(frames_per_clip)]
                if split == "train":
                    img_rel = f"training_image/{gt}.jpg"
                    write_jpeg(root / img_rel, (70, 90), colors[gt])
                    rels = [f"training_video_0{n % 8}/{clip}/{fid}.jpg" for fid in frame_ids]
                    for rel in rels:
                        write_jpeg(root / rel, (96, 64), colors[gt])
                    rows.append(
                        "\t".join(
                            [
                                clip,
                                repr(rels),
                                "-",
                                gt,
                                img_rel,
                                f"t {gt}",
                                str(n % 2),
                                f"cat{n % 2}",
                                f"spu{n}",
                                f"asr {n}",
                            ]
                        )
                    )
                    man.train.append(
                        dict(clip_id=clip, frame_ids=frame_ids, image_id=gt, category=f"cat{n % 2}", asr=f"asr {n}")
                    )
                else:
                    rels = [f"{clip}/{fid}.jpg" for fid in frame_ids]
                    for rel in rels:
                        write_jpeg(root / "query" / rel, (96, 64), colors[gt])
                    queries[clip] = {"frames": rels, "gt": [gt]}
                    man.queries.append(dict(clip_id=clip, live_id=live, frame_ids=frame_ids, gt=[gt]))
                n += 1
    (ann / f"training_videoinfo_{len(rows)}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    _dump(ann / "query_tenframes.json", queries)
    (ann / "gallery_main.txt").write_text("\n".join(gallery_lines) + "\n", encoding="utf-8")
    return man


@dataclass
class MFManifest:
    root: Path
    train: dict[str, dict] = field(default_factory=dict)  # product id -> entry
    test: dict[str, dict] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # root-relative video paths not written


def make_movingfashion(
    root: Path,
    *,
    num_train: int = 3,
    num_test: int = 3,
    video_frames: int = 12,
    fps: int = 4,
    missing_train: Sequence[int] = (),
    missing_test: Sequence[int] = (),
    seed: int = 2,
) -> MFManifest:
    """A small valid MovingFashion root (layout (c)); videos listed in ``missing_*`` are not written."""
    rng = random.Random(seed)
    root = Path(root)
    man = MFManifest(root=root)
    for split, count, missing in (("train", num_train, missing_train), ("test", num_test, missing_test)):
        data = {}
        for i in range(count):
            pid = f"{split}{i:03d}"
            img = f"imgs/{pid}.jpg"
            write_jpeg(root / img, (60, 80), _color(rng))
            n_videos = 2 if (split == "train" and i == 0) else 1
            videos = [f"videos/{pid}_{v}.mp4" for v in range(n_videos)]
            for v, rel in enumerate(videos):
                if i in missing and v == 0:
                    man.missing.append(rel)
                    continue
                write_mp4(root / rel, video_frames, fps, seed=i)
            entry = {"img_path": img, "video_paths": videos, "source": i % 2}
            if i % 2 == 0:
                entry["tracklets"] = [{str(k): [4, 4, 30 + k, 40] for k in range(0, video_frames, 2)} for _ in videos]
            data[pid] = entry
        _dump(root / f"{split}.json", data)
        getattr(man, split).update(data)
    return man


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
