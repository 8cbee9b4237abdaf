"""Shared parsing state and helpers of the LPR4M loader (both layouts of ``datasets/LAYOUT.md``).

:class:`LprReader` holds the root, the fault collector, the root-confined path joiner, the list of
annotation files read (they make the ``annotation_checksum``) and the ``prepare`` report when there
is one. The training lists are parsed in :mod:`datasets.lpr4m_train`, the test side in
:mod:`datasets.lpr4m_test`; :mod:`datasets.lpr4m` is the entry point.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from datasets import faults as F
from datasets.annotation_io import RootPaths, expect_object, find_one, parse_box, read_lines
from datasets.faults import Faults
from datasets.prepare_report import PrepareReport, read_report
from datasets.records import Box, GalleryItem
from datasets.sampling import prepared_positions
from datasets.shard_store import load_index, member_path

ATTRIBUTE_VALUES: dict[str, tuple[str, str, str]] = {
    "scale": ("small", "medium", "large"),
    "duration": ("short", "medium", "long"),
    "num_products": ("single", "few", "many"),
}
_ALIASES = {"scale": "sml", "duration": "sml", "num_products": "sfm"}
FRAME_ID = re.compile(r"^(.+)-(\d+)$")  # <clip_id>-<frame_idx>; the release pads the index ("0081")


def live_id_of(clip_id: str) -> str:
    """The livestream id of a clip / frame / image id: its first 5 dash-separated fields."""
    return "-".join(clip_id.split("-")[:5])


def split_frame_id(frame_id: str) -> Optional[tuple[str, int]]:
    """``(clip_id, frame_idx)`` of ``<clip_id>-<frame_idx>``, or None."""
    m = FRAME_ID.match(frame_id)
    return (m.group(1), int(m.group(2))) if m else None


def normalise_attribute(key: str, raw: str) -> Optional[str]:
    """Map a release value (name, one-letter alias or 0/1/2) to its name; '' -> None; else ValueError."""
    value = raw.strip().lower()
    if not value:
        return None
    names = ATTRIBUTE_VALUES[key]
    if value in names:
        return value
    if value in ("0", "1", "2"):
        return names[int(value)]
    if len(value) == 1 and value in _ALIASES[key]:
        return names[_ALIASES[key].index(value)]
    raise ValueError(f"{key} value {raw!r} is not one of {', '.join(names)}")


class LprReader:
    """Parses one LPR4M root; ``used`` collects the annotation files read (for the checksum)."""

    def __init__(self, root: Path, faults: Faults) -> None:
        self.root = root
        self.ann = root / "annotations"
        self.faults = faults
        self.paths = RootPaths(root, faults)
        self.used: list[Path] = []
        self.report: Optional[PrepareReport] = read_report(root)
        # a sharded root (prepare --format webdataset): {id: (shard, key)} (datasets/shard_store.py)
        self.shards = load_index(root) if self.report is not None and self.report.storage == "webdataset" else None

    def find(self, pattern: str, required: bool = True) -> Optional[Path]:
        path = find_one(self.ann, pattern, self.faults, required=required)
        if path is not None:
            self.used.append(path)
        return path

    def frame_path(self, frame_id: str, where: Path, line_no: Optional[int]) -> Optional[Path]:
        """``frames/<clip_id>/<frame_id>.jpg`` (or a root-relative path when the entry has a ``/``)."""
        if "/" in frame_id:
            return self.paths.join(frame_id, where, line=line_no)
        parts = split_frame_id(frame_id)
        if parts is None:
            self.faults.error(
                F.MALFORMED_ROW, where, f"frame id {frame_id!r} is not <clip_id>-<frame_idx>", line=line_no
            )
            return None
        if self.shards is not None and frame_id in self.shards:
            return member_path(self.root, *self.shards[frame_id])
        return self.paths.join(f"frames/{parts[0]}/{frame_id}.jpg", where, line=line_no)

    def image_path(self, image_id: str, where: Path, line_no: Optional[int] = None) -> Optional[Path]:
        """``images/<image_id>.jpg``, or its shard member on a sharded root."""
        if self.shards is not None and image_id in self.shards:
            return member_path(self.root, *self.shards[image_id])
        return self.paths.join(f"images/{image_id}.jpg", where, line=line_no)

    @property
    def frames_per_clip(self) -> int:
        """T of a root prepared with ``--frames-per-clip T``; 0 for a full root."""
        return self.report.frames_per_clip if self.report is not None else 0

    def held_positions(self, n: int) -> list[int]:
        """Positions of a clip's ``n`` annotated frames this root holds (all on a full root)."""
        return prepared_positions(n, self.frames_per_clip)

    def prepared_fields(self, n: int, positions: list[int]) -> dict[str, Any]:
        """The ``ClipSource`` fields of a clip of a reduced root (none on a full root)."""
        if not self.frames_per_clip:
            return {}
        return {"annotated_frames": n, "prepared_frames": self.frames_per_clip, "frame_positions": tuple(positions)}

    def failed_frame(self, frame_id: str) -> bool:
        return self.report is not None and frame_id in self.report.failed_frames

    def failed_image(self, image_id: str) -> bool:
        return self.report is not None and image_id in self.report.failed_images

    def box(self, where: Path, frame_id: str, value: Any) -> Optional[Box]:
        """A box, or None (no box; a degenerate or negative box is dropped with a warning)."""
        try:
            return parse_box(value)
        except ValueError as e:
            self.faults.warn(F.BAD_BOX, where, f"frame {frame_id}: {e}; box dropped")
            return None

    def gt_map(self, obj: Any, path: Path) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for clip_id, gts in expect_object(obj, path, self.faults, "{video_id: [image_id, ...]}").items():
            if isinstance(gts, str):
                gts = [gts]
            if not isinstance(gts, list) or not gts or not all(isinstance(g, str) and g for g in gts):
                self.faults.error(
                    F.BAD_JSON, path, f"ground truth of {clip_id!r} must be a non-empty list of image ids, got {gts!r}"
                )
                continue
            out[clip_id] = tuple(dict.fromkeys(gts))
        return out

    def text_map(self, pattern: str, ncols: int) -> dict[str, list[str]]:
        """``id \\t value [\\t more]`` lines -> {id: [value, ...]} padded to ``ncols - 1`` fields."""
        path = self.find(pattern, required=False)
        out: dict[str, list[str]] = {}
        if path is None:
            return out
        for line_no, line in read_lines(path, self.faults):
            cols = line.split("\t")
            if not cols[0] or len(cols) > ncols:
                self.faults.error(
                    F.MALFORMED_ROW,
                    path,
                    f"expected id and at most {ncols - 1} fields, got {len(cols)} columns",
                    line=line_no,
                )
                continue
            if cols[0] in out:
                self.faults.warn(F.DUPLICATE_ID, path, f"duplicate id {cols[0]!r} (kept the first)", line=line_no)
                continue
            out[cols[0]] = cols[1:] + [""] * (ncols - len(cols))
        return out

    def query_attributes(self) -> dict[str, dict[str, str]]:
        rows = self.text_map("test_videoid_attributes_*.txt", 6)
        out: dict[str, dict[str, str]] = {}
        for clip_id, (_cat_id, cat_name, *vals) in rows.items():
            attrs = {"category": cat_name} if cat_name else {}
            for key, raw in zip(("scale", "duration", "num_products"), vals):
                try:
                    value = normalise_attribute(key, raw)
                except ValueError as e:
                    self.faults.error(F.MALFORMED_ROW, self.ann / "test_videoid_attributes_*.txt", f"{clip_id}: {e}")
                    value = None
                if value is not None:
                    attrs[key] = value
            out[clip_id] = attrs
        return out

    def gallery(
        self, groups: dict[str, list[tuple[str, Path]]], titles: dict[str, list[str]], where: Path
    ) -> list[GalleryItem]:
        """One item per (group, image id), in file order; a repeated id is kept once (warned)."""
        items = []
        for live_id, members in groups.items():
            seen: set[str] = set()
            for image_id, image_path in members:
                if image_id in seen:
                    self.faults.warn(
                        F.DUPLICATE_ID, where, f"image {image_id} listed twice in group {live_id} (kept the first)"
                    )
                    continue
                seen.add(image_id)
                title, category = (titles.get(image_id) or ["", ""])[:2]
                items.append(
                    GalleryItem(image_id=image_id, image_path=image_path, group=live_id, title=title, category=category)
                )
        return items

    def check_gt(
        self,
        gt_of: dict[str, tuple[str, ...]],
        group_of: dict[str, str],
        groups: dict[str, list[tuple[str, Path]]],
        where: Path,
    ) -> None:
        members = {live: {i for i, _ in m} for live, m in groups.items()}
        for qid, gts in gt_of.items():
            for g in gts:
                if g not in members.get(group_of.get(qid, ""), ()):
                    self.faults.warn(
                        F.GT_NOT_IN_GROUP,
                        where,
                        f"query {qid}: ground truth {g} is not in gallery group {group_of.get(qid)}",
                    )
