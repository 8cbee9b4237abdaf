"""LPR4M training lists: the release's ``training_videoinfo_full_part_0i.txt`` (11 columns, read
as one list) and LPR750K's ``training_videoinfo_641821.txt`` (10 columns). See ``datasets/LAYOUT.md``.

The release ships its 4,013,617 training rows as ten part files (the dataset README); boxes exist
only for the detector's subset (about 1.1M of 473M frames), so a row's box column may be empty,
``[]``, or a list not aligned with its frames: such a row is a row without boxes (a misaligned
list is warned about), never a malformed row. With a ``prepare`` report, frames and shop images
whose download failed are left out (a pair left with no frame, or without its image, is dropped);
a root prepared with ``--frames-per-clip T`` holds only the frames read at T
(:mod:`datasets.frame_selection`), and a clip keeps just those.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from datasets import faults as F
from datasets.annotation_io import parse_literal_list, read_lines
from datasets.lpr4m_reader import LprReader, normalise_attribute
from datasets.records import Box, ClipSource, TrainPair

PART_FILE = re.compile(r"^training_videoinfo_full_part_(\d+)\.txt$")
SINGLE_FILE = re.compile(r"^training_videoinfo_(?:full_)?(\d+)\.txt$")  # one file, row count in the name
L750K_FILE = re.compile(r"^training_videoinfo_(\d+k?)\.txt$")  # _641821 (config) or _750k (README), never _val
NO_BOXES = ("", "-", "[]", "None", "null")


def _matching(reader: LprReader, pattern: re.Pattern) -> list[Path]:
    if not reader.ann.is_dir():
        return []
    return sorted(
        (p for p in reader.ann.iterdir() if pattern.match(p.name) and p.is_file()),
        key=lambda p: (int(re.sub(r"\D", "", pattern.match(p.name).group(1)) or 0), p.name),
    )  # type: ignore[union-attr]


def release_train_files(reader: LprReader) -> list[Path]:
    """The part files in part order, or the single training list; a fault when ambiguous or absent."""
    parts, single = _matching(reader, PART_FILE), _matching(reader, SINGLE_FILE)
    if parts and single or len(single) > 1:
        names = ", ".join(p.name for p in parts + single)
        reader.faults.error(
            F.MALFORMED_ROW, reader.ann, f"ambiguous training lists: {names}; keep the ten part files or one list"
        )
    files = parts or single[:1]
    if not files:
        reader.faults.error(
            F.MISSING_ANNOTATION,
            reader.ann / "training_videoinfo_full_part_0*.txt",
            "required annotation file is missing",
        )
    reader.used.extend(files)
    return files


def release_train(reader: LprReader) -> list[TrainPair]:
    pairs: list[TrainPair] = []
    seen: set[tuple[str, str]] = set()
    for path in release_train_files(reader):
        for line_no, line in read_lines(path, reader.faults):
            pair = _release_row(reader, path, line_no, line.split("\t"))
            if pair is None:
                continue
            key = (pair.clip.clip_id, pair.image_id)
            if key in seen:
                reader.faults.warn(
                    F.DUPLICATE_ID, path, f"duplicate pair {key[0]} / {key[1]} (kept the first)", line=line_no
                )
                continue
            seen.add(key)
            pairs.append(pair)
    return pairs


def _row_boxes(reader: LprReader, path: Path, line_no: int, text: str, frame_ids: list[str]) -> dict[int, Box]:
    """Per-frame boxes of a row: aligned list, {frame_id: box}, or none at all."""
    if text.strip() in NO_BOXES:
        return {}
    try:
        values: Any = parse_literal_list(text)
    except ValueError as e:
        reader.faults.warn(F.BAD_BOX, path, f"box list: {e}; row kept without boxes", line=line_no)
        return {}
    if not values:
        return {}
    if len(values) != len(frame_ids):
        reader.faults.warn(
            F.BAD_BOX, path, f"{len(values)} boxes for {len(frame_ids)} frames; row kept without boxes", line=line_no
        )
        return {}
    boxes: dict[int, Box] = {}
    for i, value in enumerate(values):
        box = reader.box(path, frame_ids[i], value)
        if box is not None:
            boxes[i] = box
    return boxes


def _release_row(reader: LprReader, path: Path, line_no: int, cols: list[str]) -> Optional[TrainPair]:
    err = lambda msg: reader.faults.error(F.MALFORMED_ROW, path, msg, line=line_no)  # noqa: E731
    if len(cols) != 11:
        err(f"expected 11 tab-separated columns, got {len(cols)}")
        return None
    clip_id, frames_txt, boxes_txt, image_id, title, cat_id, cat_name, asr = cols[:8]
    if not clip_id or not image_id:
        err("empty video_id or image_id")
        return None
    try:
        frame_ids = parse_literal_list(frames_txt)
    except ValueError as e:
        err(f"frame list: {e}")
        return None
    if not frame_ids or not all(isinstance(f, str) and f for f in frame_ids):
        err("frame list must be a non-empty list of frame ids")
        return None
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
    boxes = _row_boxes(reader, path, line_no, boxes_txt, frame_ids)
    frame_paths: list[Path] = []
    kept_boxes: dict[int, Box] = {}
    positions: list[int] = []
    for i in reader.held_positions(len(frame_ids)):
        fid = frame_ids[i]
        p = reader.frame_path(fid, path, line_no)
        if p is None:
            return None
        if reader.failed_frame(fid):
            continue
        if i in boxes:
            kept_boxes[len(frame_paths)] = boxes[i]
        frame_paths.append(p)
        positions.append(i)
    if not frame_paths or reader.failed_image(image_id):
        what = "every frame" if not frame_paths else f"shop image {image_id}"
        reader.faults.warn(
            F.FAILED_DOWNLOAD,
            path,
            f"pair {clip_id} / {image_id}: {what} failed to download; pair dropped",
            line=line_no,
        )
        return None
    image_path = reader.image_path(image_id, path, line_no)
    if image_path is None:
        return None
    clip = ClipSource(
        clip_id=clip_id,
        frame_paths=tuple(frame_paths),
        boxes=kept_boxes,
        asr=asr,
        box_space="original",
        **reader.prepared_fields(len(frame_ids), positions),
    )
    return TrainPair(
        clip=clip,
        image_id=image_id,
        image_path=image_path,
        product_id=image_id,
        title=title,
        category=cat_name,
        attributes=attributes,
    )


def lpr750k_train(reader: LprReader) -> list[TrainPair]:
    files = _matching(reader, L750K_FILE)
    if len(files) > 1:
        reader.faults.error(
            F.MALFORMED_ROW, reader.ann, f"several LPR750K training lists: {', '.join(p.name for p in files)}; keep one"
        )
    if not files:
        return []
    path = files[0]
    reader.used.append(path)
    pairs: list[TrainPair] = []
    seen: set[tuple[str, str]] = set()
    for line_no, line in read_lines(path, reader.faults):
        cols = line.split("\t")
        err = lambda msg: reader.faults.error(F.MALFORMED_ROW, path, msg, line=line_no)  # noqa: E731
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
        frame_paths = [reader.paths.join(r, path, line=line_no) for r in rels]
        image_path = reader.paths.join(image_rel, path, line=line_no)
        if image_path is None or any(p is None for p in frame_paths):
            continue
        if (clip_id, image_id) in seen:
            reader.faults.warn(
                F.DUPLICATE_ID, path, f"duplicate pair {clip_id} / {image_id} (kept the first)", line=line_no
            )
            continue
        seen.add((clip_id, image_id))
        clip = ClipSource(clip_id=clip_id, frame_paths=tuple(frame_paths), asr=asr)  # type: ignore[arg-type]
        pairs.append(
            TrainPair(
                clip=clip,
                image_id=image_id,
                image_path=image_path,
                product_id=image_id,
                title=title,
                category=cat_name,
                attributes={"category": cat_name} if cat_name else {},
            )
        )
    return pairs
