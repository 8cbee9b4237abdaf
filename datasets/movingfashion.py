"""MovingFashion loader (WACV 2022 video-to-shop benchmark; layout in ``datasets/LAYOUT.md``).

``train.json`` / ``test.json`` are objects keyed by product id with ``img_path``, ``video_paths``,
``source`` (0 = hard, 1 = regular) and optional per-video ``tracklets``. Clips are whole videos,
decoded with decord; the candidates are the frames ``ffmpeg -vf fps=1`` writes, as RICE's
``prepare_movingfashion.py`` extracts them (``datasets.sampling.video_candidates``). The gallery
is every test shop image (that script's ``gallery_full.txt``), one global gallery with a single
ground truth per query.

Two choices follow RICE's script on the real dataset and keep the committed rows' protocol on
``movingfashion-synth`` (env overrides for both, the real one first in each pair):

* the at-most-T pick: ``rice-mf`` = ``linspace(0, n, T, endpoint=False)`` over the candidates
  (RICE) vs ``linspace`` = ``linspace(0, n - 1, T)``; env ``LPR_BENCH_MF_FRAME_PICK``;
* a test query whose video is missing: ``drop`` (RICE's ``video_to_gt.json`` leaves it out, so
  ``movingfashion_eval.py`` divides by 1,341 of 1,342) vs ``miss`` (kept with ``missing=True``,
  scored as a miss over 1,342: R@k(miss) = R@k(drop) x 1341 / 1342); env ``LPR_BENCH_MF_MISSING_TEST``.

The public archive lacks some videos (22 train, 1 test). The ``videos/`` folder is listed once;
missing videos are named in ``splits.missing`` and their training pairs are dropped (RICE's script
skips them too). A degenerate or negative tracklet box, or a negative frame index, is dropped with
a ``bad_box`` warning; the load goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from benchmark.core.registry import DATASETS
from datasets import faults as F
from datasets.annotation_io import annotation_checksum, expect_object, parse_box, read_json, safe_path
from datasets.errors import DataError
from datasets.faults import Faults
from datasets.records import Box, ClipSource, DatasetSplits, GalleryItem, Query, TrainPair, missing_query
from datasets.sampling import FRAME_PICKS

log = logging.getLogger(__name__)

SAMPLE_FPS = 1.0
SOURCES = {0: "hard", 1: "regular"}
MISSING_TEST_POLICIES = ("drop", "miss")
RICE_PICK, RICE_MISSING_TEST = "rice-mf", "drop"  # RICE's prepare_movingfashion.py / movingfashion_eval.py


def policy(env: str, default: str, allowed: tuple[str, ...]) -> str:
    """``$env`` if set (validated), else ``default``."""
    value = os.environ.get(env, "").strip() or default
    if value not in allowed:
        raise ValueError(f"{env}={value!r}: expected one of {', '.join(allowed)}")
    return value


@DATASETS.register(
    "movingfashion", description="MovingFashion (videos + shop images), one global gallery, hard/regular split"
)
def load_movingfashion(
    data_root: Optional[Path], *, size: str = "default", seed: int = 0, cache_dir: Optional[Path] = None
) -> DatasetSplits:
    """Load a MovingFashion data root. ``size``/``seed``/``cache_dir`` do not apply to real data."""
    if data_root is None:
        raise DataError("dataset movingfashion needs --data-root pointing at the MovingFashion archive")
    faults = Faults(strict=True)
    splits = read_movingfashion(
        Path(data_root),
        faults,
        frame_pick=policy("LPR_BENCH_MF_FRAME_PICK", RICE_PICK, FRAME_PICKS),
        missing_test=policy("LPR_BENCH_MF_MISSING_TEST", RICE_MISSING_TEST, MISSING_TEST_POLICIES),
    )
    faults.log_summary("movingfashion")
    return splits


def read_movingfashion(
    root: Path, faults: Faults, *, frame_pick: str = RICE_PICK, missing_test: str = RICE_MISSING_TEST
) -> DatasetSplits:
    """Parse ``train.json`` and ``test.json`` of ``root`` into records, reporting to ``faults``.
    ``frame_pick`` / ``missing_test``: see the module docstring."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder", path=root, kind=F.MISSING_FILE)
    present = _list_videos(root)
    train_entries = _entries(root / "train.json", root, faults)
    test_entries = _entries(root / "test.json", root, faults)
    missing: list[str] = []

    train: list[TrainPair] = []
    dropped = 0
    for pid, e in train_entries:
        for video, boxes in zip(e["videos"], e["tracks"]):
            if _rel(root, video) not in present:
                missing.append(_rel(root, video))
                faults.warn(F.MISSING_VIDEO, video, f"train product {pid}: video is missing; pair dropped")
                dropped += 1
                continue
            clip = ClipSource(
                clip_id=video.stem, video_path=video, boxes=boxes, sample_fps=SAMPLE_FPS, frame_pick=frame_pick
            )
            train.append(
                TrainPair(
                    clip=clip, image_id=pid, image_path=e["image"], product_id=pid, attributes={"source": e["source"]}
                )
            )
    if dropped:
        log.warning("movingfashion: dropped %d training pair(s) whose video is missing", dropped)

    queries: list[Query] = []
    gallery: list[GalleryItem] = []
    seen_q: set[str] = set()
    for pid, e in sorted(test_entries, key=lambda x: x[0]):
        gallery.append(GalleryItem(image_id=pid, image_path=e["image"], group=None))
        for video, boxes in zip(e["videos"], e["tracks"]):
            qid = video.stem
            if qid in seen_q:
                faults.error(F.DUPLICATE_ID, root / "test.json", f"video {qid} is the query of two products")
                continue
            seen_q.add(qid)
            attrs = {"source": e["source"]}
            if _rel(root, video) not in present:
                missing.append(_rel(root, video))
                if missing_test == "drop":
                    faults.warn(
                        F.MISSING_VIDEO,
                        video,
                        f"test product {pid}: video is missing; query left out, as RICE's evaluation does",
                    )
                    continue
                faults.warn(
                    F.MISSING_VIDEO, video, f"test product {pid}: video is missing; query kept, scored as a miss"
                )
                queries.append(missing_query(qid, (pid,), None, attrs))
                continue
            clip = ClipSource(clip_id=qid, video_path=video, boxes=boxes, sample_fps=SAMPLE_FPS, frame_pick=frame_pick)
            queries.append(Query(query_id=qid, clip=clip, gt_ids=(pid,), group=None, attributes=attrs))
    if missing:
        log.warning(
            "movingfashion: %d video(s) missing from %s/videos: %s", len(missing), root, ", ".join(missing[:10])
        )
    log.info("movingfashion: %d train pairs, %d queries, %d gallery images", len(train), len(queries), len(gallery))
    return DatasetSplits(
        name="movingfashion",
        root=root,
        train=train,
        queries=queries,
        gallery=gallery,
        annotation_checksum=annotation_checksum(root, [root / "train.json", root / "test.json"]),
        layout="movingfashion",
        missing=sorted(set(missing)),
        grouped=False,
    )


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _list_videos(root: Path) -> set[str]:
    """Root-relative paths of every file under ``videos/`` (one listing, no per-file stat)."""
    out: set[str] = set()
    base = root / "videos"
    if not base.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(base):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        out.update(f"{rel_dir}/{f}" for f in files)
    return out


def _entries(path: Path, root: Path, faults: Faults) -> list[tuple[str, dict[str, Any]]]:
    """Validated entries of one split file: ``(product_id, {image, videos, tracks, source})``."""
    data = expect_object(read_json(path, faults), path, faults, "keyed by product id")
    out = []
    for pid, entry in data.items():
        bad = lambda msg: faults.error(F.BAD_JSON, path, f"product {pid!r}: {msg}")  # noqa: E731
        if not isinstance(entry, dict):
            bad(f"entry must be an object, got {type(entry).__name__}")
            continue
        img, videos, source = entry.get("img_path"), entry.get("video_paths"), entry.get("source")
        if not isinstance(img, str) or not img:
            bad("'img_path' must be a non-empty string")
            continue
        if not isinstance(videos, list) or not videos or not all(isinstance(v, str) and v for v in videos):
            bad("'video_paths' must be a non-empty list of paths")
            continue
        if isinstance(source, bool) or source not in SOURCES:
            bad(f"'source' must be 0 (hard) or 1 (regular), got {source!r}")
            continue
        image = safe_path(root, img, faults, path)
        video_paths = [safe_path(root, v, faults, path) for v in videos]
        if image is None or any(v is None for v in video_paths):
            continue
        tracks = _tracklets(entry.get("tracklets"), len(videos), path, pid, faults)
        if tracks is None:
            continue
        out.append((str(pid), {"image": image, "videos": video_paths, "tracks": tracks, "source": SOURCES[source]}))
    return out


def _tracklets(value: Any, n: int, path: Path, pid: str, faults: Faults) -> Optional[list[dict[int, Box]]]:
    """One ``{frame_index: box}`` per video; ``None`` after a fault."""
    if value is None:
        return [{} for _ in range(n)]
    if not isinstance(value, list) or len(value) != n:
        faults.error(F.BAD_JSON, path, f"product {pid!r}: 'tracklets' must be a list with one dict per video ({n})")
        return None
    out = []
    for track in value:
        boxes: dict[int, Box] = {}
        if track is None:
            out.append(boxes)
            continue
        if not isinstance(track, dict):
            faults.error(F.BAD_JSON, path, f"product {pid!r}: a tracklet must be an object {{frame_index: box}}")
            return None
        for key, box_value in track.items():
            try:
                idx = int(key)
            except ValueError:
                faults.error(F.BAD_JSON, path, f"product {pid!r}: tracklet key {key!r} is not a frame index")
                return None
            try:
                box = parse_box(box_value)
            except ValueError as e:
                faults.warn(F.BAD_BOX, path, f"product {pid!r}: tracklet entry {key!r}: {e}; box dropped")
                continue
            if idx < 0:
                faults.warn(F.BAD_BOX, path, f"product {pid!r}: negative frame index {key!r}; box dropped")
                continue
            if box is not None:
                boxes[idx] = box
        out.append(boxes)
    return out
