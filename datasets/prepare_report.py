"""The report the ``prepare`` step leaves at the data root, and the frame sidecars it keeps.

``prepare_report.json`` (written by :mod:`datasets.prepare_lpr4m`, read by the LPR4M loader and by
``check-data``) says what the download lost: per URL list the URL count and the failed URLs, the
failed frame ids and image ids, the test clips left with no frame and the gallery images missing.
The loader drops failed frames from frame lists (a test clip left with none is kept and scored
as a miss), drops failed gallery images and training pairs whose shop image failed. A root
prepared with ``--frames-per-clip T`` records T (``frames_per_clip``) and the rule
(:mod:`datasets.frame_selection`); ``format`` says whether its frames are files or shards.

A sidecar ``<frame_id>.json`` (img2dataset's per-sample JSON, kept beside each renamed frame)
records the frame's ``original_width``/``original_height`` and the stored ``width``/``height``:
the release's boxes are in original pixels, the stored frame is resized (shortest side 256), so
:func:`original_to_stored` rescales a box by stored / original. Without a sidecar the stored
frame is the original (the synthetic default writes frames at their original size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from datasets.errors import DataError
from datasets.faults import BAD_JSON
from datasets.shard_store import read_path

Box = tuple[float, float, float, float]

REPORT_NAME = "prepare_report.json"


@dataclass
class PrepareReport:
    """What a ``prepare`` run lost. Sets of ids; ``lists`` holds per-URL-list counts."""

    failed_frames: set[str] = field(default_factory=set)
    failed_images: set[str] = field(default_factory=set)
    clips_without_frames: list[str] = field(default_factory=list)
    gallery_missing: list[str] = field(default_factory=list)
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    frames_per_clip: int = 0  # prepare --frames-per-clip T: only the frames read at T (0: every frame)
    storage: str = "files"  # "files" (frames/, images/) or "webdataset" (shards/ + shards/index.tsv)

    @property
    def num_failed(self) -> int:
        return len(self.failed_frames) + len(self.failed_images)


def _json_object(path: Path, read: Callable[[Path], Union[str, bytes]], what: str) -> Optional[dict[str, Any]]:
    """The JSON object ``read(path)`` holds, or None when there is no such file; anything else
    (unreadable, not JSON, not an object) is one :class:`DataError` naming the file and ``what``."""
    try:
        data = json.loads(read(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable {what} ({e})", path=path, kind=BAD_JSON) from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a {what} must be a JSON object", path=path, kind=BAD_JSON)
    return data


def read_report(root: Path) -> Optional[PrepareReport]:
    """The report at ``root``, or None when the root was not made by ``prepare``."""
    path = Path(root) / REPORT_NAME
    data = _json_object(path, lambda p: p.read_text(encoding="utf-8"), "prepare report")
    if data is None:
        return None
    try:
        return PrepareReport(
            failed_frames=set(data.get("failed_frame_ids", [])),
            failed_images=set(data.get("failed_image_ids", [])),
            clips_without_frames=list(data.get("test_clips_without_frames", [])),
            gallery_missing=list(data.get("gallery_images_missing", [])),
            lists=dict(data.get("lists", {})),
            frames_per_clip=int(data.get("frames_per_clip") or 0),
            storage=str(data.get("format") or "files"),
        )
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: malformed prepare report ({e})", path=path, kind=BAD_JSON) from None


def _number(value: Any) -> Optional[float]:
    """img2dataset writes ints; the dataset README's sample shows strings ("540")."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 else None


def sidecar_original_size(frame_path: Path) -> Optional[tuple[float, float]]:
    """``(original_width, original_height)`` from the frame's sidecar JSON, or None (no sidecar)."""
    side = Path(frame_path).with_suffix(".json")
    data = _json_object(side, read_path, "frame sidecar")  # a file, or the sidecar member of a shard
    if data is None:
        return None
    w, h = _number(data.get("original_width")), _number(data.get("original_height"))
    if w is None or h is None:
        raise DataError(f"{side}: sidecar lacks a positive original_width/original_height", path=side, kind=BAD_JSON)
    return w, h


def original_to_stored(box: Box, original: tuple[float, float], stored: tuple[int, int]) -> Box:
    """A box in original pixels -> pixels of the stored (resized) frame."""
    sx, sy = stored[0] / original[0], stored[1] / original[1]
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def boxes_in_stored_pixels(
    boxes: Sequence[Optional[Box]], frame_paths: Sequence[Path], stored: Sequence[tuple[int, int]]
) -> list[Optional[Box]]:
    """Original-pixel boxes of sampled frames -> stored-frame pixels; a sidecar is read only for a
    frame that has a box (at most T small reads a clip), so this costs nothing on unboxed clips."""
    out: list[Optional[Box]] = []
    for box, path, size in zip(boxes, frame_paths, stored):
        original = sidecar_original_size(path) if box is not None else None
        out.append(original_to_stored(box, original, size) if box is not None and original is not None else box)
    return out
