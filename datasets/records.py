"""Typed records every loader yields and every consumer reads.

A loader turns an on-disk release (LPR4M, MovingFashion, or a synthetic copy in the same
layout) into one :class:`DatasetSplits`. Paths are absolute and already checked to stay
inside the data root. Boxes are ``(x1, y1, x2, y2)`` in pixels of the stored frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ClipSource:
    """Where a clip's frames come from: a list of JPEG frames or one video file.

    ``boxes`` maps a frame position (index into ``frame_paths``, or a video frame index)
    to the intent product's box in that frame; absent frames have no box.
    ``sample_fps``: for videos, the rate frames are taken at before the T-frame linspace
    (MovingFashion: 1 fps); ``None`` means every decoded frame is a candidate.
    """

    clip_id: str
    frame_paths: tuple[Path, ...] = ()
    video_path: Optional[Path] = None
    boxes: Mapping[int, Box] = field(default_factory=dict)
    asr: str = ""
    sample_fps: Optional[float] = None
    box_space: str = "stored"  # "original": boxes in the original frame's pixels, rescaled with the
    # frame's sidecar JSON when it has one (the LPR4M release; datasets/prepare_report.py)
    frame_pick: str = "linspace"  # the at-most-T pick: "linspace" (n-1 inclusive) or "rice-mf" (see sampling.py)
    # a root prepared with --frames-per-clip T (datasets/frame_selection.py): the clip's annotated frame
    # count, T, and the annotated position of each frame in frame_paths; 0 / () on a full root
    annotated_frames: int = 0
    prepared_frames: int = 0
    frame_positions: tuple[int, ...] = ()

    @property
    def is_video(self) -> bool:
        return self.video_path is not None


@dataclass(frozen=True)
class TrainPair:
    """One (clip, shop image) training pair."""

    clip: ClipSource
    image_id: str
    image_path: Path
    product_id: str  # identity for ID losses; products with several pairs share it
    title: str = ""
    category: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


def livestream_of(pair: TrainPair) -> str:
    """An LPR4M clip id is ``<live_id>-<start_ms>-<end_ms>``: its livestream is the live id."""
    parts = pair.clip.clip_id.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else pair.clip.clip_id


@dataclass(frozen=True)
class Query:
    """A test clip. ``group`` is its gallery group (LPR4M live id) or None (global gallery).

    ``gt_ids`` may hold several image ids; an empty clip (missing video) is still a query and
    scored as a miss: ``clip.frame_paths`` empty and ``clip.video_path`` None, ``missing=True``.
    """

    query_id: str
    clip: ClipSource
    gt_ids: tuple[str, ...]
    group: Optional[str] = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    missing: bool = False


def missing_query(
    query_id: str, gt_ids: tuple[str, ...], group: Optional[str], attributes: Mapping[str, str], asr: str = ""
) -> Query:
    """A test clip with nothing to read (its video, or every frame, absent): still a query, with an
    empty clip, so that it is scored as a miss rather than dropped from the denominator."""
    return Query(
        query_id=query_id,
        clip=ClipSource(clip_id=query_id, asr=asr),
        gt_ids=gt_ids,
        group=group,
        attributes=attributes,
        missing=True,
    )


@dataclass(frozen=True)
class GalleryItem:
    image_id: str
    image_path: Path
    group: Optional[str] = None
    title: str = ""
    category: str = ""


@dataclass
class DatasetSplits:
    """Everything one dataset provides to the protocol."""

    name: str  # e.g. "lpr4m", "movingfashion"
    root: Path
    train: list[TrainPair]
    queries: list[Query]
    gallery: list[GalleryItem]
    annotation_checksum: str  # sha256 over the annotation files, hex
    layout: str = ""  # e.g. "lpr4m-release", "lpr750k", "movingfashion"
    missing: list[str] = field(default_factory=list)  # files the release lacks, reported
    grouped: bool = True  # LPR4M: rank per gallery group; MovingFashion: one global gallery

    @property
    def num_products(self) -> int:
        return len({p.product_id for p in self.train})

    @property
    def categories(self) -> list[str]:
        cats = {p.category for p in self.train} | {g.category for g in self.gallery}
        return sorted(c for c in cats if c)
