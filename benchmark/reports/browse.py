"""Per-query browsing of a submission (HELM's "instances"): ``run_benchmark.py browse``.

For each test query it shows a few of the clip's frames, its ground-truth image(s) and the
submission's top-5 gallery images with the hits marked, filterable in the page by attribute
and by outcome, and, given a second submission (``--against``), by "A right, B wrong" (and
the converse) at rank 1. Hits are those of the re-scored rankings
(:func:`benchmark.record.rescore.rescore`), so a page never shows a claimed number.

Everything is generated locally from the data into ``--out`` (default
``runs/browse/<submission stem>``; ``runs/`` is git-ignored): ``index.html``, ``data.js``,
``browse.js``, ``style.css`` and JPEG thumbnails under ``thumbs/``. Frames of real datasets
must not be committed; the page needs no server and no network.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from PIL import Image

from benchmark.core.atomic import atomic_write_bytes
from benchmark.record.record import Submission
from benchmark.record.rescore import rescore
from benchmark.record.submission import SubmissionError, load_submission
from benchmark.reports.publish import splits_for_submission
from datasets.decoding import VideoFile, read_bytes
from datasets.errors import DataError
from datasets.records import ClipSource, DatasetSplits
from datasets.sampling import uniform_indices

ASSETS = Path(__file__).resolve().parent / "site_assets"
TOP = 5
FRAMES_SHOWN = 4
THUMB_PX = 112


def default_out(submission: Path) -> Path:
    stem = submission.name.split(".json")[0]
    return Path("runs") / "browse" / stem


def _thumb_bytes(img: Any, px: int) -> bytes:
    img = img.convert("RGB")
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _clip_frames(clip: ClipSource, count: int) -> list[Any]:
    """Up to ``count`` frames spread over the clip, as PIL images ([] if unreadable)."""

    if clip.video_path is not None:
        video = VideoFile(clip.video_path)
        picked = uniform_indices(video.num_frames, min(count, video.num_frames))
        batch = video.get(picked)
        return [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in batch]
    paths = list(clip.frame_paths)
    # read_bytes: a frame may be a member of a tar shard (prepare --format webdataset)
    return (
        [Image.open(io.BytesIO(read_bytes(paths[i]))) for i in uniform_indices(len(paths), min(count, len(paths)))]
        if paths
        else []
    )


class _Thumbs:
    """Writes thumbnails once each under ``out/thumbs``; returns their relative paths."""

    def __init__(self, out: Path, px: int) -> None:
        self.out, self.px, self.done = out, px, {}

    def image(self, path: Path) -> Optional[str]:

        key = str(path)
        if key not in self.done:
            name = f"thumbs/g-{hashlib.sha1(key.encode()).hexdigest()[:16]}.jpg"
            try:
                with Image.open(io.BytesIO(read_bytes(path))) as img:  # a file or a shard member
                    atomic_write_bytes(self.out / name, _thumb_bytes(img, self.px))
                self.done[key] = name
            except (OSError, DataError):
                self.done[key] = None
        return self.done[key]

    def frames(self, qi: int, clip: ClipSource, count: int) -> list[str]:
        try:
            frames = _clip_frames(clip, count)
        except (DataError, OSError):  # a missing or unreadable clip: the page shows no frames instead of stopping
            return []
        names = []
        for j, img in enumerate(frames):
            name = f"thumbs/q{qi:06d}-{j}.jpg"
            atomic_write_bytes(self.out / name, _thumb_bytes(img, self.px))
            names.append(name)
        return names


def outcomes(sub_path: Path, splits: DatasetSplits) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, bool]]:
    """(submission, query id -> its re-checked top list, query id -> hit@1) of one submission."""
    report = rescore(sub_path, splits)
    top = {str(q): [str(g) for g in ids] for q, ids in report.submission["rankings"]}
    gts = {q.query_id: set(q.gt_ids) for q in splits.queries}
    hit1 = {q.query_id: bool(top.get(q.query_id)) and top[q.query_id][0] in gts[q.query_id] for q in splits.queries}
    return report.submission, top, hit1


def browse_data(
    splits: DatasetSplits,
    sub: Submission,
    top: Mapping[str, list[str]],
    hit1: Mapping[str, bool],
    thumbs: Optional[_Thumbs],
    *,
    against: Optional[tuple[Mapping[str, Any], Mapping[str, list[str]], Mapping[str, bool]]] = None,
    limit: Optional[int] = None,
    frames: int = FRAMES_SHOWN,
) -> dict[str, Any]:
    """The page's data: one entry per query (split order), thumbnails written on the way."""
    gallery = {}
    for g in splits.gallery:
        gallery.setdefault((g.group if splits.grouped else None, g.image_id), g)
    queries = []
    for qi, q in enumerate(splits.queries[:limit] if limit else splits.queries):
        group = q.group if splits.grouped else None

        def item(image_id: str) -> dict[str, Any]:
            g = gallery.get((group, image_id))
            thumb = thumbs.image(g.image_path) if thumbs is not None and g is not None else None
            return {
                "id": image_id,
                "thumb": thumb,
                "title": g.title if g is not None else "",
                "hit": image_id in q.gt_ids,
            }

        entry = {
            "id": q.query_id,
            "group": group,
            "attributes": {k: str(v) for k, v in q.attributes.items()},
            "missing": q.missing,
            "asr": q.clip.asr[:300],
            "frames": [] if q.missing or thumbs is None else thumbs.frames(qi, q.clip, frames),
            "gt": [item(g) for g in q.gt_ids],
            "top": [item(g) for g in top.get(q.query_id, [])[:TOP]],
            "a": hit1[q.query_id],
        }
        if against is not None:
            entry["b"] = against[2][q.query_id]
            entry["top_b"] = [item(g) for g in against[1].get(q.query_id, [])[:TOP]]
        queries.append(entry)

    def name(s: Mapping[str, Any]) -> str:
        m = s["method"]
        return f"{m['name']} ({m['variant']})" if m.get("variant") else m["name"]

    attrs = sorted({k for e in queries for k in e["attributes"]})
    return {
        "schema": 1,
        "dataset": splits.name,
        "a": name(sub),
        "b": name(against[0]) if against else None,
        "num_queries": len(splits.queries),
        "shown": len(queries),
        "top": TOP,
        "attributes": attrs,
        "queries": queries,
    }


INDEX = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>LPR-Bench browse: {title}</title><link rel="stylesheet" href="style.css"></head>
<body>
<header><h1>Per-query browser: {title}</h1>
<p class="lede">Each query's frames, its ground truth and the top-{top} gallery images of the re-scored rankings
(green border: a ground-truth image). Generated locally by <code>run_benchmark.py browse</code>; not for committing.</p>
<div id="filters" class="compare"></div></header>
<main id="app"><noscript>This page needs JavaScript.</noscript></main>
<script src="data.js"></script><script src="browse.js"></script>
</body></html>
"""


def write_browser(
    sub_path: Path,
    out: Path,
    *,
    data_root: Optional[Path] = None,
    against: Optional[Path] = None,
    limit: Optional[int] = None,
    frames: int = FRAMES_SHOWN,
    px: int = THUMB_PX,
    splits: Optional[DatasetSplits] = None,
) -> Path:
    """Write the browser for ``sub_path`` (and ``against``) into ``out``; return ``out/index.html``."""

    sub_path = Path(sub_path)
    if splits is None:
        splits = splits_for_submission(load_submission(sub_path), data_root)
    sub, top, hit1 = outcomes(sub_path, splits)
    other = None
    if against is not None:
        other = outcomes(Path(against), splits)
    out = Path(out)
    data = browse_data(splits, sub, top, hit1, _Thumbs(out, px), against=other, limit=limit, frames=frames)
    title = data["a"] + (f" vs {data['b']}" if data["b"] else "") + f" on {data['dataset']}"
    files = {
        "index.html": INDEX.replace("{title}", html.escape(title)).replace("{top}", str(TOP)).encode("utf-8"),
        "data.js": ("window.LPR_BROWSE = " + json.dumps(data, sort_keys=True, separators=(",", ":")) + ";\n").encode(
            "utf-8"
        ),
        "browse.js": (ASSETS / "browse.js").read_bytes(),
        "style.css": (ASSETS / "style.css").read_bytes() + (ASSETS / "browse.css").read_bytes(),
    }
    for name, blob in files.items():
        atomic_write_bytes(out / name, blob)
    return out / "index.html"


def browse_command(
    sub_path: Path, data_root: Optional[Path], out: Optional[Path], against: Optional[Path], limit: Optional[int]
) -> int:
    for p in (sub_path, against):
        if p is not None and not Path(p).is_file():
            raise SubmissionError(f"{p}: no such submission file")
    out = out or default_out(Path(sub_path))
    index = write_browser(Path(sub_path), out, data_root=data_root, against=against, limit=limit)
    print(f"wrote {index} (open it in a browser; thumbnails under {out / 'thumbs'})")
    return 0


def filter_counts(data: Mapping[str, Any]) -> dict[str, int]:
    """How many shown queries each outcome filter keeps (what the page's filter shows)."""
    qs: Sequence[Mapping[str, Any]] = data["queries"]
    out = {"all": len(qs), "a-right": sum(q["a"] for q in qs), "a-wrong": sum(not q["a"] for q in qs)}
    if data.get("b") is not None:
        out["a-right-b-wrong"] = sum(q["a"] and not q["b"] for q in qs)
        out["a-wrong-b-right"] = sum(q["b"] and not q["a"] for q in qs)
    return out
