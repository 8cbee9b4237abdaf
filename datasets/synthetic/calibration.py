"""Calibration baseline: colour-histogram nearest neighbour, R@k overall and per attribute.

A query is the mean of its frames' joint RGB histograms (``bins`` per channel, L1-normalised);
a shop image is its histogram with the near-uniform background masked out (pixels close to the
image's corner colour). Score = histogram intersection. Ranking follows the evaluation
protocol: per gallery group when ``splits.grouped`` (LPR4M), else one global gallery; ties
keep gallery order (stable sort); a query with no frames (missing video) is a miss.
``use_boxes=True`` crops each frame to its intent box first (an oracle-localisation variant).

The synthetic data is meant to defeat this baseline (products of a livestream share colours;
frames are dominated by the room and the host), while a trained model should do far better.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from benchmark.core.registry import DATASETS
from datasets.decoding import VideoFile
from datasets.records import ClipSource, DatasetSplits
from datasets.sampling import uniform_indices, video_candidates

WORK_SIDE = 64  # images are reduced to about this side before the histogram


def rgb_histogram(pixels: np.ndarray, bins: int) -> np.ndarray:
    """Joint RGB histogram of ``pixels`` [N, 3] uint8, L1-normalised (zeros if N == 0)."""
    q = (pixels.astype(np.int64) * bins) // 256
    idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = np.bincount(idx, minlength=bins**3).astype(np.float64)
    total = hist.sum()
    return hist / total if total > 0 else hist


def _small(img: Image.Image) -> np.ndarray:
    img = img.convert("RGB")
    if max(img.size) > WORK_SIDE * 1.5:
        img.draft("RGB", (WORK_SIDE, WORK_SIDE))
        img = img.convert("RGB")
        k = WORK_SIDE / max(img.size)
        if k < 1:
            img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BILINEAR)
    return np.asarray(img)


def image_histogram(path: Path, bins: int, mask_background: bool = True, tol: int = 24) -> np.ndarray:
    with Image.open(path) as img:
        arr = _small(img)
    px = arr.reshape(-1, 3)
    if mask_background:
        corners = np.stack([arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1]]).astype(np.int64)
        bg = np.median(corners, axis=0)
        keep = np.abs(px.astype(np.int64) - bg).max(axis=1) > tol
        if keep.sum() >= 16:
            px = px[keep]
    return rgb_histogram(px, bins)


def _frames(
    clip: ClipSource, num_frames: int
) -> list[tuple[np.ndarray, Optional[tuple[float, float, float, float]], float]]:
    """(pixels, box in stored pixels or None, scale stored->pixels) for the sampled frames."""
    out = []
    if clip.video_path is not None:
        video = VideoFile(clip.video_path)
        cands = video_candidates(video.num_frames, video.fps, clip.sample_fps)
        picked = [cands[p] for p in uniform_indices(len(cands), num_frames)]
        batch = video.get(picked).permute(0, 2, 3, 1).numpy()
        tol = int(round(video.fps / (2 * clip.sample_fps))) if clip.sample_fps and video.fps else 0
        for arr, idx in zip(batch, picked):
            near = [k for k in clip.boxes if abs(k - idx) <= tol]
            box = clip.boxes[min(near, key=lambda k: abs(k - idx))] if near else None
            out.append((arr, box, 1.0))
        return out
    for p in uniform_indices(len(clip.frame_paths), num_frames):
        with Image.open(clip.frame_paths[p]) as img:
            w = img.width
            arr = _small(img)
        out.append((arr, clip.boxes.get(p), arr.shape[1] / w))
    return out


def clip_histogram(clip: ClipSource, bins: int, num_frames: int, use_boxes: bool = False) -> Optional[np.ndarray]:
    """Mean frame histogram of a clip (box crops when ``use_boxes`` and any frame has a box)."""
    frames = _frames(clip, num_frames)
    if not frames:
        return None
    crops = []
    if use_boxes:
        for arr, box, k in frames:
            if box is None:
                continue
            x1, y1, x2, y2 = (int(round(v * k)) for v in box)
            crop = arr[max(0, y1) : max(y1 + 1, y2), max(0, x1) : max(x1 + 1, x2)]
            if crop.size:
                crops.append(crop.reshape(-1, 3))
    if not crops:
        crops = [arr.reshape(-1, 3) for arr, _, _ in frames]
    return np.mean([rgb_histogram(c, bins) for c in crops], axis=0)


def color_histogram_r1(
    splits: DatasetSplits,
    *,
    bins: int = 8,
    num_frames: int = 10,
    use_boxes: bool = False,
    mask_background: bool = True,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Colour-histogram NN retrieval on ``splits``' test side; R@k in percent, per attribute too.

    Returns ``{"r1", "r5", "r10", "chance_r1", "num_queries", "per_attribute": {key: {value:
    {"r1", "n"}}}, "settings"}``; ``chance_r1`` is the expected R1 of a random ranking.
    """
    gallery = splits.gallery
    g_hist = (
        np.stack([image_histogram(g.image_path, bins, mask_background) for g in gallery])
        if gallery
        else np.zeros((0, bins**3))
    )
    members: dict[Optional[str], list[int]] = defaultdict(list)
    for i, g in enumerate(gallery):
        members[g.group if splits.grouped else None].append(i)
    ids = [g.image_id for g in gallery]
    hits = {k: [] for k in ks}
    chance = []
    per_attr: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for q in splits.queries:
        cand = members.get(q.group if splits.grouped else None, [])
        gt = set(q.gt_ids)
        n_gt = sum(ids[i] in gt for i in cand)
        chance.append(n_gt / len(cand) if cand else 0.0)
        qh = None if q.missing else clip_histogram(q.clip, bins, num_frames, use_boxes)
        if qh is None or not cand:
            ranked: list[str] = []
        else:
            scores = np.minimum(g_hist[cand], qh[None, :]).sum(axis=1)
            order = np.argsort(-scores, kind="stable")
            ranked = [ids[cand[j]] for j in order[: max(ks)]]
        for k in ks:
            hits[k].append(any(r in gt for r in ranked[:k]))
        for key, value in q.attributes.items():
            per_attr[key][value].append(any(r in gt for r in ranked[:1]))
    n = len(splits.queries)
    pct = lambda xs: 100.0 * float(np.mean(xs)) if xs else 0.0  # noqa: E731
    out: dict[str, Any] = {f"r{k}": pct(hits[k]) for k in ks}
    out.update(
        chance_r1=pct(chance),
        num_queries=n,
        per_attribute={
            key: {v: {"r1": pct(xs), "n": len(xs)} for v, xs in sorted(vals.items())}
            for key, vals in sorted(per_attr.items())
        },
        settings={
            "bins": bins,
            "num_frames": num_frames,
            "use_boxes": use_boxes,
            "mask_background": mask_background,
            "grouped": splits.grouped,
        },
    )
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m datasets.synthetic.calibration --dataset lpr4m-synth [--size S] [--seed N] [--data-root DIR]
    [--knobs JSON] [--use-boxes]``: print the colour-histogram baseline as JSON."""
    # the loaders register themselves on import; datasets.synthetic imports this module's package,
    # so these registrations happen only when the script runs (a module-level import is a circle)
    import datasets.lpr4m  # noqa: F401, PLC0415
    import datasets.movingfashion  # noqa: F401, PLC0415
    import datasets.synthetic  # noqa: F401, PLC0415

    p = argparse.ArgumentParser(prog="python -m datasets.synthetic.calibration", description=main.__doc__)
    p.add_argument("--dataset", default="lpr4m-synth")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--size", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knobs", default=None, help='JSON object of knob overrides, e.g. {"preset": "easy"}')
    p.add_argument("--use-boxes", action="store_true", help="crop frames to the intent box (oracle localisation)")
    args = p.parse_args(argv)
    if args.knobs:
        os.environ["LPR_BENCH_SYNTH_KNOBS"] = args.knobs
    splits = DATASETS.get(args.dataset)(args.data_root, size=args.size, seed=args.seed)
    print(json.dumps(color_histogram_r1(splits, use_boxes=args.use_boxes), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
