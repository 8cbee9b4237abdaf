"""LPR4M loader: one entry point for both on-disk layouts (see ``datasets/LAYOUT.md``).

* ``lpr4m-release``: the full LPR4M release (``training_videoinfo_*.txt`` with 11 columns and
  per-frame boxes, ``test_videoid_to_gtimage_*.json``, ``test_liveid_to_gallery_*.json``,
  ``test_frameid2gtbox_*.json``, ASR and title lists; ``frames/`` and ``images/`` folders).
* ``lpr750k``: the official RICE code's LPR750K layout (``annotations/training_videoinfo_641821.txt``
  with root-relative frame paths, ``annotations/query_tenframes.json``,
  ``annotations/gallery_main.txt``; ``query/``, ``gallery/<live_id>/``, ``training_image/``,
  ``training_video_0X/``).

The layout is auto-detected (``query_tenframes.json`` present -> ``lpr750k``) and recorded in
``DatasetSplits.layout``. Loading never touches image or frame files: existence and decodability
are ``check_dataset``'s job, and a file missing at training time raises ``DataError`` naming it.
Test queries are grouped by live id (each query ranks only its livestream's gallery).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from benchmark.registry import DATASETS
from datasets import faults as F
from datasets.annotation_io import (
    annotation_checksum,
    expect_object,
    find_one,
    parse_box,
    parse_literal_list,
    read_json,
    read_lines,
    RootPaths,
)
from datasets.errors import DataError
from datasets.faults import Faults
from datasets.records import Box, ClipSource, DatasetSplits, GalleryItem, Query, TrainPair

log = logging.getLogger(__name__)

LAYOUT_RELEASE = "lpr4m-release"
LAYOUT_750K = "lpr750k"

ATTRIBUTE_VALUES: dict[str, tuple[str, str, str]] = {
    "scale": ("small", "medium", "large"),
    "duration": ("short", "medium", "long"),
    "num_products": ("single", "few", "many"),
}
_ALIASES = {"scale": "sml", "duration": "sml", "num_products": "sfm"}


def live_id_of(clip_id: str) -> str:
    """The livestream id of a clip / frame / image id: its first 5 dash-separated fields."""
    return "-".join(clip_id.split("-")[:5])


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


def detect_layout(root: Path) -> str:
    """``lpr750k`` if ``annotations/query_tenframes.json`` exists, ``lpr4m-release`` if the release's
    test ground truth does, else ``DataError``."""
    ann = root / "annotations"
    if (ann / "query_tenframes.json").is_file():
        return LAYOUT_750K
    if ann.is_dir() and any(ann.glob("test_videoid_to_gtimage_*.json")):
        return LAYOUT_RELEASE
    raise DataError(
        f"{root}: not an LPR4M data root (expected annotations/query_tenframes.json for LPR750K or "
        f"annotations/test_videoid_to_gtimage_*.json for the LPR4M release; see datasets/LAYOUT.md)",
        path=root, kind=F.MISSING_ANNOTATION,
    )


@DATASETS.register("lpr4m", description="LPR4M (full release or the official LPR750K layout), JPEG frames, per-livestream galleries")
def load_lpr4m(
    data_root: Optional[Path], *, size: str = "default", seed: int = 0, cache_dir: Optional[Path] = None
) -> DatasetSplits:
    """Load an LPR4M data root (either layout). ``size``/``seed``/``cache_dir`` do not apply to real data."""
    if data_root is None:
        raise DataError("dataset lpr4m needs --data-root pointing at an LPR4M or LPR750K download")
    faults = Faults(strict=True)
    splits = read_lpr4m(Path(data_root), faults)
    faults.log_summary("lpr4m")
    return splits


def read_lpr4m(root: Path, faults: Faults) -> DatasetSplits:
    """Parse the annotations of ``root`` into records, reporting problems to ``faults``."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder", path=root, kind=F.MISSING_FILE)
    layout = detect_layout(root)
    reader = _Reader(root, faults)
    if layout == LAYOUT_RELEASE:
        train = reader.release_train()
        queries, gallery = reader.release_test()
    else:
        train = reader.lpr750k_train()
        queries, gallery = reader.lpr750k_test()
    log.info("lpr4m (%s): %d train pairs, %d queries, %d gallery images", layout, len(train), len(queries), len(gallery))
    return DatasetSplits(
        name="lpr4m",
        root=root,
        train=train,
        queries=queries,
        gallery=gallery,
        annotation_checksum=annotation_checksum(root, reader.used),
        layout=layout,
        grouped=True,
    )


class _Reader:
    """Parses one LPR4M root; ``used`` collects the annotation files read (for the checksum)."""

    def __init__(self, root: Path, faults: Faults) -> None:
        self.root = root
        self.ann = root / "annotations"
        self.faults = faults
        self.paths = RootPaths(root, faults)
        self.used: list[Path] = []

    def _find(self, pattern: str, required: bool = True) -> Optional[Path]:
        path = find_one(self.ann, pattern, self.faults, required=required)
        if path is not None:
            self.used.append(path)
        return path

    # ------------------------------------------------------------------ training lists
    def release_train(self) -> list[TrainPair]:
        path = self._find("training_videoinfo_*.txt")
        if path is None:
            return []
        pairs: list[TrainPair] = []
        seen: set[tuple[str, str]] = set()
        for line_no, line in read_lines(path, self.faults):
            pair = self._release_row(path, line_no, line.split("\t"))
            if pair is None:
                continue
            key = (pair.clip.clip_id, pair.image_id)
            if key in seen:
                self.faults.warn(F.DUPLICATE_ID, path, f"duplicate pair {key[0]} / {key[1]} (kept the first)", line=line_no)
                continue
            seen.add(key)
            pairs.append(pair)
        return pairs

    def _release_row(self, path: Path, line_no: int, cols: list[str]) -> Optional[TrainPair]:
        err = lambda msg: self.faults.error(F.MALFORMED_ROW, path, msg, line=line_no)  # noqa: E731
        if len(cols) != 11:
            err(f"expected 11 tab-separated columns, got {len(cols)}")
            return None
        clip_id, frames_txt, boxes_txt, image_id, title, cat_id, cat_name, asr = cols[:8]
        if not clip_id or not image_id:
            err("empty video_id or image_id")
            return None
        try:
            frame_ids = parse_literal_list(frames_txt)
            box_values = parse_literal_list(boxes_txt)
        except ValueError as e:
            err(f"frame or box list: {e}")
            return None
        if not frame_ids or not all(isinstance(f, str) and f for f in frame_ids):
            err("frame list must be a non-empty list of frame ids")
            return None
        if len(box_values) != len(frame_ids):
            err(f"{len(box_values)} boxes for {len(frame_ids)} frames")
            return None
        boxes: dict[int, Box] = {}
        for i, value in enumerate(box_values):
            try:
                box = parse_box(value)
            except ValueError as e:
                err(str(e))
                return None
            if box is not None:
                boxes[i] = box
        if cat_id.strip() and not cat_id.strip().lstrip("-").isdigit():
            err(f"category id {cat_id!r} is not an integer")
            return None
        attributes = {"category": cat_name} if cat_name else {}
        for key, raw in zip(("scale", "duration", "num_products"), cols[8:11]):
            try:
                value = normalise_attribute(key, raw)
            except ValueError as e:
                err(str(e))
                return None
            if value is not None:
                attributes[key] = value
        frame_paths = []
        for fid in frame_ids:
            p = self._frame_path(fid, path, line_no)
            if p is None:
                return None
            frame_paths.append(p)
        image_path = self.paths.join(f"images/{image_id}.jpg", path, line=line_no)
        if image_path is None:
            return None
        clip = ClipSource(clip_id=clip_id, frame_paths=tuple(frame_paths), boxes=boxes, asr=asr)
        return TrainPair(
            clip=clip, image_id=image_id, image_path=image_path, product_id=image_id,
            title=title, category=cat_name, attributes=attributes,
        )

    def _frame_path(self, frame_id: str, where: Path, line_no: Optional[int]) -> Optional[Path]:
        if "/" in frame_id:
            return self.paths.join(frame_id, where, line=line_no)
        clip_id, sep, idx = frame_id.rpartition("-")
        if not sep or not idx.isdigit() or not clip_id:
            self.faults.error(F.MALFORMED_ROW, where, f"frame id {frame_id!r} is not <clip_id>-<frame_idx>", line=line_no)
            return None
        return self.paths.join(f"frames/{clip_id}/{frame_id}.jpg", where, line=line_no)

    def lpr750k_train(self) -> list[TrainPair]:
        path = self._find("training_videoinfo_*.txt")
        if path is None:
            return []
        pairs: list[TrainPair] = []
        seen: set[tuple[str, str]] = set()
        for line_no, line in read_lines(path, self.faults):
            cols = line.split("\t")
            err = lambda msg: self.faults.error(F.MALFORMED_ROW, path, msg, line=line_no)  # noqa: E731
            if len(cols) != 10:
                err(f"expected 10 tab-separated columns, got {len(cols)}")
                continue
            clip_id, frames_txt, _, image_id, image_rel, title, cat_id, cat_name, _spu, asr = cols
            if not clip_id or not image_id:
                err("empty video_id or image_id")
                continue
            try:
                rels = parse_literal_list(frames_txt)
            except ValueError as e:
                err(f"frame-path list: {e}")
                continue
            if not rels or not all(isinstance(r, str) for r in rels):
                err("frame-path list must be a non-empty list of paths")
                continue
            frame_paths = [self.paths.join(r, path, line=line_no) for r in rels]
            image_path = self.paths.join(image_rel, path, line=line_no)
            if image_path is None or any(p is None for p in frame_paths):
                continue
            if (clip_id, image_id) in seen:
                self.faults.warn(F.DUPLICATE_ID, path, f"duplicate pair {clip_id} / {image_id} (kept the first)", line=line_no)
                continue
            seen.add((clip_id, image_id))
            clip = ClipSource(clip_id=clip_id, frame_paths=tuple(frame_paths), asr=asr)  # type: ignore[arg-type]
            pairs.append(TrainPair(
                clip=clip, image_id=image_id, image_path=image_path, product_id=image_id, title=title,
                category=cat_name, attributes={"category": cat_name} if cat_name else {},
            ))
        return pairs

    # ------------------------------------------------------------------ test side
    def _gt_map(self, obj: Any, path: Path) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for clip_id, gts in expect_object(obj, path, self.faults, "{video_id: [image_id, ...]}").items():
            if isinstance(gts, str):
                gts = [gts]
            if not isinstance(gts, list) or not gts or not all(isinstance(g, str) and g for g in gts):
                self.faults.error(F.BAD_JSON, path, f"ground truth of {clip_id!r} must be a non-empty list of image ids, got {gts!r}")
                continue
            out[clip_id] = tuple(dict.fromkeys(gts))
        return out

    def _text_map(self, pattern: str, ncols: int) -> dict[str, list[str]]:
        """``id \\t value [\\t more]`` lines -> {id: [value, ...]} padded to ``ncols - 1`` fields."""
        path = self._find(pattern, required=False)
        out: dict[str, list[str]] = {}
        if path is None:
            return out
        for line_no, line in read_lines(path, self.faults):
            cols = line.split("\t")
            if not cols[0] or len(cols) > ncols:
                self.faults.error(F.MALFORMED_ROW, path, f"expected id and at most {ncols - 1} fields, got {len(cols)} columns", line=line_no)
                continue
            if cols[0] in out:
                self.faults.warn(F.DUPLICATE_ID, path, f"duplicate id {cols[0]!r} (kept the first)", line=line_no)
                continue
            out[cols[0]] = cols[1:] + [""] * (ncols - len(cols))
        return out

    def _query_attributes(self) -> dict[str, dict[str, str]]:
        rows = self._text_map("test_videoid_attributes_*.txt", 6)
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

    def _frame_boxes(self, path: Optional[Path]) -> dict[str, Any]:
        if path is None:
            return {}
        return expect_object(read_json(path, self.faults), path, self.faults, "{frame_id: box}")

    def _box(self, boxes_path: Optional[Path], frame_id: str, value: Any) -> Optional[Box]:
        try:
            return parse_box(value)
        except ValueError as e:
            self.faults.error(F.BAD_JSON, boxes_path or self.ann, f"frame {frame_id}: {e}")
            return None

    def _gallery(self, groups: dict[str, list[tuple[str, Path]]], titles: dict[str, list[str]], where: Path) -> list[GalleryItem]:
        items = []
        for live_id, members in groups.items():
            seen: set[str] = set()
            for image_id, image_path in members:
                if image_id in seen:
                    self.faults.warn(F.DUPLICATE_ID, where, f"image {image_id} listed twice in group {live_id} (kept the first)")
                    continue
                seen.add(image_id)
                title, category = (titles.get(image_id) or ["", ""])[:2]
                items.append(GalleryItem(image_id=image_id, image_path=image_path, group=live_id, title=title, category=category))
        return items

    def _check_gt(self, queries: list[Query], groups: dict[str, list[tuple[str, Path]]], where: Path) -> None:
        members = {live: {i for i, _ in m} for live, m in groups.items()}
        for q in queries:
            for g in q.gt_ids:
                if g not in members.get(q.group or "", ()):
                    self.faults.warn(F.GT_NOT_IN_GROUP, where, f"query {q.query_id}: ground truth {g} is not in gallery group {q.group}")

    def release_test(self) -> tuple[list[Query], list[GalleryItem]]:
        gt_path = self._find("test_videoid_to_gtimage_*.json")
        gal_path = self._find("test_liveid_to_gallery_*.json")
        box_path = self._find("test_frameid2gtbox_*.json")
        gt = self._gt_map(read_json(gt_path, self.faults), gt_path) if gt_path else {}
        groups: dict[str, list[tuple[str, Path]]] = {}
        if gal_path is not None:
            for live_id, ids in expect_object(read_json(gal_path, self.faults), gal_path, self.faults, "{live_id: [image_id, ...]}").items():
                if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                    self.faults.error(F.BAD_JSON, gal_path, f"gallery of {live_id!r} must be a list of image ids")
                    continue
                paths = [(i, self.paths.join(f"images/{i}.jpg", gal_path)) for i in ids]
                groups[live_id] = [(i, p) for i, p in paths if p is not None]
        clip_frames: dict[str, list[tuple[int, str, Any]]] = {}
        for frame_id, value in self._frame_boxes(box_path).items():
            clip_id, sep, idx = frame_id.rpartition("-")
            if not sep or not idx.isdigit():
                self.faults.error(F.BAD_JSON, box_path, f"key {frame_id!r} is not a frame id <clip_id>-<frame_idx>")
                continue
            clip_frames.setdefault(clip_id, []).append((int(idx), frame_id, value))
        asr = self._text_map("test_videoid_asr_*.txt", 2)
        titles = self._text_map("test_image_title_*.txt", 3)
        attrs = self._query_attributes()
        queries = []
        for clip_id, gt_ids in gt.items():
            live_id = live_id_of(clip_id)
            if live_id not in groups:
                self.faults.error(F.MISSING_GROUP, gal_path or self.ann, f"query {clip_id}: live id {live_id} has no gallery group")
                continue
            frames = sorted(clip_frames.get(clip_id, []))
            if not frames:
                self.faults.error(F.EMPTY_CLIP, box_path or self.ann, f"query {clip_id} has no frames listed")
                continue
            paths, boxes = [], {}
            for pos, (_, frame_id, value) in enumerate(frames):
                p = self._frame_path(frame_id, box_path, None)  # type: ignore[arg-type]
                if p is None:
                    break
                paths.append(p)
                box = self._box(box_path, frame_id, value)
                if box is not None:
                    boxes[pos] = box
            else:
                clip = ClipSource(clip_id=clip_id, frame_paths=tuple(paths), boxes=boxes, asr=(asr.get(clip_id) or [""])[0])
                queries.append(Query(query_id=clip_id, clip=clip, gt_ids=gt_ids, group=live_id, attributes=attrs.get(clip_id, {})))
        self._check_gt(queries, groups, gt_path or self.ann)
        return queries, self._gallery(groups, titles, gal_path or self.ann)

    def lpr750k_test(self) -> tuple[list[Query], list[GalleryItem]]:
        q_path = self.ann / "query_tenframes.json"
        self.used.append(q_path)
        query_obj = expect_object(read_json(q_path, self.faults), q_path, self.faults, "{video_id: {frames, gt}}")
        gt_path = self._find("test_videoid_to_gtimage_*.json", required=False)
        gt_file = self._gt_map(read_json(gt_path, self.faults), gt_path) if gt_path else None
        g_path = self.ann / "gallery_main.txt"
        self.used.append(g_path)
        groups: dict[str, list[tuple[str, Path]]] = {}
        for line_no, line in read_lines(g_path, self.faults):
            rel = line.strip()
            live_id, sep, name = rel.partition("/")
            if not sep or not name or "/" in name:
                self.faults.error(F.MALFORMED_ROW, g_path, f"expected <live_id>/<image_file>, got {rel!r}", line=line_no)
                continue
            p = self.paths.join(f"gallery/{rel}", g_path, line=line_no)
            if p is not None:
                groups.setdefault(live_id, []).append((live_id_of(Path(name).stem), p))
        box_path = self._find("test_frameid2gtbox_*.json", required=False)
        frame_boxes = self._frame_boxes(box_path)
        asr = self._text_map("test_videoid_asr_*.txt", 2)
        titles = self._text_map("test_image_title_*.txt", 3)
        attrs = self._query_attributes()
        queries = []
        for clip_id, entry in query_obj.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("frames"), list):
                self.faults.error(F.BAD_JSON, q_path, f"entry of {clip_id!r} must be an object with a 'frames' list")
                continue
            rels = entry["frames"]
            if not rels or not all(isinstance(r, str) and r for r in rels):
                self.faults.error(F.EMPTY_CLIP, q_path, f"query {clip_id} has no frames listed")
                continue
            if gt_file is not None:
                gt_ids = gt_file.get(clip_id)
                if gt_ids is None:
                    self.faults.error(F.BAD_JSON, gt_path, f"query {clip_id} has no ground truth")  # type: ignore[arg-type]
                    continue
            else:
                got = self._gt_map({clip_id: entry.get("gt")}, q_path)
                if clip_id not in got:
                    continue
                gt_ids = got[clip_id]
            live_id = live_id_of(clip_id)
            if live_id not in groups:
                self.faults.error(F.MISSING_GROUP, g_path, f"query {clip_id}: live id {live_id} has no gallery group")
                continue
            paths = [self.paths.join(f"query/{r}", q_path) for r in rels]
            if any(p is None for p in paths):
                continue
            boxes = {}
            for pos, p in enumerate(paths):
                stem = p.stem  # type: ignore[union-attr]
                if stem in frame_boxes:
                    box = self._box(box_path, stem, frame_boxes[stem])
                    if box is not None:
                        boxes[pos] = box
            clip = ClipSource(clip_id=clip_id, frame_paths=tuple(paths), boxes=boxes, asr=(asr.get(clip_id) or [""])[0])  # type: ignore[arg-type]
            queries.append(Query(query_id=clip_id, clip=clip, gt_ids=gt_ids, group=live_id, attributes=attrs.get(clip_id, {})))
        self._check_gt(queries, groups, gt_path or q_path)
        return queries, self._gallery(groups, titles, g_path)
