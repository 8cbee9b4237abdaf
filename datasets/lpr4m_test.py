"""LPR4M test side: queries and per-livestream galleries of both layouts (``datasets/LAYOUT.md``).

Release layout. The queries are the keys of ``test_videoid_to_gtimage_*.json`` (the official
evaluation divides by all of them). A query's frames come from the test frame list: the test frame
URL list ``annotations/test_frame_url_*.txt`` when present (its URL file stems are frame ids), else
the frames present on disk under ``frames/<clip_id>/``, ordered by frame index. They never come
from ``test_frameid2gtbox_*.json``, whose 426,751 keys are only the frames with an annotated box
(501,656 frames in all): that file gives boxes, where present. Frames that a ``prepare`` report
lists as failed are left out; a query left with no frame is kept with ``missing=True`` and scored
as a miss, and the loader counts them. A root prepared with ``--frames-per-clip T`` keeps a
query's annotated frame count and only the frames read at T (:mod:`datasets.frame_selection`).

LPR750K layout. Every ``gallery_main.txt`` line is a gallery item, as in the official database
(several images of one product, ``<image_id>-<k>.jpg``, are each ranked); when an image id has
several lines in a group, each item is named by its file stem and the query's ground truth lists
them all, so hit@k is the official one. With ``test_videoid_to_gtimage_*.json`` (the file
``lpr_eval.py`` divides by) every query of it is a query; one absent from ``query_tenframes.json``
is a miss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from datasets import faults as F
from datasets.annotation_io import expect_object, read_json, read_lines
from datasets.lpr4m_reader import LprReader, live_id_of, split_frame_id
from datasets.records import Box, ClipSource, GalleryItem, Query, missing_query

FrameList = list[tuple[int, str]]  # (frame_idx, frame_id), ordered


def url_frame_lists(reader: LprReader, path: Path) -> dict[str, FrameList]:
    """{clip_id: frames} from a frame URL list (one URL a line, the file stem is the frame id)."""
    out: dict[str, FrameList] = {}
    for line_no, line in read_lines(path, reader.faults):
        name = line.strip().rsplit("/", 1)[-1].split("?", 1)[0]
        stem = name[:-4] if name.lower().endswith(".jpg") else name
        parts = split_frame_id(stem)
        if parts is None:
            reader.faults.error(
                F.MALFORMED_ROW, path, f"URL {line.strip()!r} does not end in <clip_id>-<frame_idx>.jpg", line=line_no
            )
            continue
        out.setdefault(parts[0], []).append((parts[1], stem))
    for frames in out.values():
        frames.sort()
    return out


def disk_frame_list(reader: LprReader, clip_id: str) -> FrameList:
    """The ``<clip_id>-<idx>.jpg`` files in ``frames/<clip_id>/`` (one listing), by frame index."""
    folder = reader.root / "frames" / clip_id
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if not name.endswith(".jpg"):
            continue
        parts = split_frame_id(name[:-4])
        if parts is not None and parts[0] == clip_id:
            out.append((parts[1], name[:-4]))
    return sorted(out)


def _boxes_by_frame(reader: LprReader, path: Optional[Path]) -> dict[str, Any]:
    if path is None:
        return {}
    return expect_object(read_json(path, reader.faults), path, reader.faults, "{frame_id: box}")


def release_test(reader: LprReader) -> tuple[list[Query], list[GalleryItem]]:
    gt_path = reader.find("test_videoid_to_gtimage_*.json")
    gal_path = reader.find("test_liveid_to_gallery_*.json")
    box_path = reader.find("test_frameid2gtbox_*.json")
    url_path = reader.find("test_frame_url_*.txt", required=False)
    gt = reader.gt_map(read_json(gt_path, reader.faults), gt_path) if gt_path else {}
    groups: dict[str, list[tuple[str, Path]]] = {}
    dropped_images = 0
    if gal_path is not None:
        for live_id, ids in expect_object(
            read_json(gal_path, reader.faults), gal_path, reader.faults, "{live_id: [image_id, ...]}"
        ).items():
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                reader.faults.error(F.BAD_JSON, gal_path, f"gallery of {live_id!r} must be a list of image ids")
                continue
            members = []
            for i in ids:
                if reader.failed_image(i):
                    dropped_images += 1
                    continue
                p = reader.image_path(i, gal_path)
                if p is not None:
                    members.append((i, p))
            groups[live_id] = members
    if dropped_images:
        reader.faults.warn(
            F.FAILED_DOWNLOAD,
            gal_path or reader.ann,
            f"{dropped_images} gallery image(s) failed to download; left out of their gallery",
        )
    box_values = _boxes_by_frame(reader, box_path)
    listed = url_frame_lists(reader, url_path) if url_path is not None else None
    asr = reader.text_map("test_videoid_asr_*.txt", 2)
    titles = reader.text_map("test_image_title_*.txt", 3)
    attrs = reader.query_attributes()
    queries: list[Query] = []
    without_frames = 0
    where = url_path or reader.root / "frames"
    for clip_id, gt_ids in gt.items():
        live_id = live_id_of(clip_id)
        if live_id not in groups:
            reader.faults.error(
                F.MISSING_GROUP, gal_path or reader.ann, f"query {clip_id}: live id {live_id} has no gallery group"
            )
            continue
        frames = listed.get(clip_id, []) if listed is not None else disk_frame_list(reader, clip_id)
        annotated = len(frames)
        frames = [(i, frames[i][1]) for i in reader.held_positions(annotated) if not reader.failed_frame(frames[i][1])]
        paths: list[Path] = []
        positions: list[int] = []
        boxes: dict[int, Box] = {}
        for position, frame_id in frames:
            p = reader.frame_path(frame_id, where, None)
            if p is None:
                continue
            positions.append(position)
            if frame_id in box_values:
                box = reader.box(box_path or reader.ann, frame_id, box_values[frame_id])
                if box is not None:
                    boxes[len(paths)] = box
            paths.append(p)
        text = (asr.get(clip_id) or [""])[0]
        if not paths:
            without_frames += 1
            queries.append(missing_query(clip_id, gt_ids, live_id, attrs.get(clip_id, {}), asr=text))
            continue
        clip = ClipSource(
            clip_id=clip_id,
            frame_paths=tuple(paths),
            boxes=boxes,
            asr=text,
            box_space="original",
            **reader.prepared_fields(annotated, positions),
        )
        queries.append(
            Query(query_id=clip_id, clip=clip, gt_ids=gt_ids, group=live_id, attributes=attrs.get(clip_id, {}))
        )
    if without_frames:
        kind = F.FAILED_DOWNLOAD if reader.report is not None else F.EMPTY_CLIP
        reader.faults.warn(
            kind, where, f"{without_frames} of {len(gt)} queries have no frame; kept and scored as misses"
        )
    reader.check_gt(gt, {q.query_id: q.group or "" for q in queries}, groups, gt_path or reader.ann)
    return queries, reader.gallery(groups, titles, gal_path or reader.ann)


def _gallery_main(
    reader: LprReader, g_path: Path
) -> tuple[dict[str, list[tuple[str, Path]]], dict[str, dict[str, list[str]]]]:
    """Every line of ``gallery_main.txt`` -> groups of (item id, path), and per group the item ids
    of each image id (several when one product has several images)."""
    lines: dict[str, list[tuple[str, str, Path]]] = {}
    for line_no, line in read_lines(g_path, reader.faults):
        rel = line.strip()
        live_id, sep, name = rel.partition("/")
        if not sep or not name or "/" in name:
            reader.faults.error(F.MALFORMED_ROW, g_path, f"expected <live_id>/<image_file>, got {rel!r}", line=line_no)
            continue
        p = reader.paths.join(f"gallery/{rel}", g_path, line=line_no)
        if p is not None:
            lines.setdefault(live_id, []).append((live_id_of(Path(name).stem), Path(name).stem, p))
    groups: dict[str, list[tuple[str, Path]]] = {}
    aliases: dict[str, dict[str, list[str]]] = {}
    for live_id, entries in lines.items():
        count: dict[str, int] = {}
        for image_id, _, _ in entries:
            count[image_id] = count.get(image_id, 0) + 1
        members, alias = [], {}
        for image_id, stem, p in entries:
            item_id = image_id if count[image_id] == 1 else stem
            members.append((item_id, p))
            alias.setdefault(image_id, []).append(item_id)
        groups[live_id], aliases[live_id] = members, alias
    return groups, aliases


def lpr750k_test(reader: LprReader) -> tuple[list[Query], list[GalleryItem]]:
    q_path = reader.ann / "query_tenframes.json"
    reader.used.append(q_path)
    query_obj = expect_object(read_json(q_path, reader.faults), q_path, reader.faults, "{video_id: {frames, gt}}")
    gt_path = reader.find("test_videoid_to_gtimage_*.json", required=False)
    gt_file = reader.gt_map(read_json(gt_path, reader.faults), gt_path) if gt_path else None
    g_path = reader.ann / "gallery_main.txt"
    reader.used.append(g_path)
    groups, aliases = _gallery_main(reader, g_path)
    box_path = reader.find("test_frameid2gtbox_*.json", required=False)
    frame_boxes = _boxes_by_frame(reader, box_path)
    asr = reader.text_map("test_videoid_asr_*.txt", 2)
    titles = reader.text_map("test_image_title_*.txt", 3)
    attrs = reader.query_attributes()
    if gt_file is not None:
        for clip_id in query_obj:
            if clip_id not in gt_file:
                reader.faults.error(F.BAD_JSON, gt_path, f"query {clip_id} has no ground truth")  # type: ignore[arg-type]
        order = list(gt_file)
    else:
        order = list(query_obj)
    queries: list[Query] = []
    gt_of: dict[str, tuple[str, ...]] = {}
    without_frames = 0
    for clip_id in order:
        entry = query_obj.get(clip_id)
        if gt_file is not None:
            gt_ids = gt_file[clip_id]
        else:
            got = reader.gt_map({clip_id: entry.get("gt") if isinstance(entry, dict) else None}, q_path)
            if clip_id not in got:
                continue
            gt_ids = got[clip_id]
        live_id = live_id_of(clip_id)
        if live_id not in groups:
            reader.faults.error(F.MISSING_GROUP, g_path, f"query {clip_id}: live id {live_id} has no gallery group")
            continue
        gt_of[clip_id] = gt_ids
        items = tuple(dict.fromkeys(i for g in gt_ids for i in aliases[live_id].get(g, [g])))
        text = (asr.get(clip_id) or [""])[0]
        rels = entry.get("frames") if isinstance(entry, dict) else None
        if entry is not None and (not isinstance(rels, list) or not all(isinstance(r, str) and r for r in rels)):
            reader.faults.error(F.BAD_JSON, q_path, f"entry of {clip_id!r} must be an object with a 'frames' list")
            continue
        paths = [reader.paths.join(f"query/{r}", q_path) for r in rels or []]
        if any(p is None for p in paths):
            continue
        if not paths:
            without_frames += 1
            queries.append(missing_query(clip_id, items, live_id, attrs.get(clip_id, {}), asr=text))
            continue
        boxes: dict[int, Box] = {}
        for pos, p in enumerate(paths):
            stem = p.stem  # type: ignore[union-attr]
            if stem in frame_boxes:
                box = reader.box(box_path or q_path, stem, frame_boxes[stem])
                if box is not None:
                    boxes[pos] = box
        clip = ClipSource(clip_id=clip_id, frame_paths=tuple(paths), boxes=boxes, asr=text)  # type: ignore[arg-type]
        queries.append(
            Query(query_id=clip_id, clip=clip, gt_ids=items, group=live_id, attributes=attrs.get(clip_id, {}))
        )
    if without_frames:
        reader.faults.warn(
            F.EMPTY_CLIP,
            q_path,
            f"{without_frames} of {len(order)} queries have no frame entry; kept and scored as misses",
        )
    by_image_id = {live: [(image_id, Path()) for image_id in alias] for live, alias in aliases.items()}
    reader.check_gt(gt_of, {c: live_id_of(c) for c in gt_of}, by_image_id, gt_path or q_path)
    item_titles = dict(titles)  # an item named by its file stem takes its image id's title
    for alias in aliases.values():
        for image_id, item_ids in alias.items():
            for item_id in item_ids:
                if image_id in titles:
                    item_titles.setdefault(item_id, titles[image_id])
    return queries, reader.gallery(groups, item_titles, g_path)
