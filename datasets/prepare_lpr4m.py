"""``run_benchmark.py prepare --dataset lpr4m``: from the release's four URL lists to the loader's layout.

The LPR4M release (github.com/adxcreative/RICE) is four URL lists (``training_frame_url_*.txt``,
``training_image_url_*.txt``, ``test_frame_url_*.txt``, ``test_image_url_*.txt``) and annotation
files. :func:`prepare` downloads each list with img2dataset with the dataset README's settings
(``--output_format files --image_size 256 --resize_mode keep_ratio --timeout 10 --retries 0
--incremental_mode incremental``) into ``<out>/download/<list>/``, then, in one pass over the
finished shards (threads, one shard a task), renames (or, ``link=True``, hard-links) every
downloaded ``<key>.jpg`` to ``frames/<clip_id>/<frame_id>.jpg`` or ``images/<image_id>.jpg`` (the
URL's file stem names it) with its sidecar ``<key>.json`` beside the frame: nothing is copied.
A shard done is marked (``<shard>_layout.json``), so a rerun resumes: img2dataset skips finished
shards, the layout pass skips marked ones. The annotation files and the test frame URL list go to
``<out>/annotations/``; ``<out>/prepare_report.json`` lists the failed URLs, the test clips left
with no frame and the gallery images missing (:mod:`datasets.prepare_report`).

Before anything is fetched, every list and annotation file it relies on is validated
(:mod:`datasets.prepare_validate`: one line per fault); ``frames_per_clip=T`` (the default 10)
downloads only the frames the protocol reads at T, from reduced lists in
``<out>/download/reduced/`` (:mod:`datasets.frame_selection`), and records T and the rule in the
report; ``fmt="webdataset"`` keeps img2dataset's tar shards in ``<out>/shards/`` with an index and
writes no per-frame file (:mod:`datasets.prepare_shards`). A rerun with other settings is refused
(``prepare_plan.json``).

``fast=True`` is the path that skips HTTP (the synthetic release, whose files are on disk): each
URL is read from ``<release>/www/`` and resized by img2dataset's own ``Resizer`` with the same
settings, so both paths give the loader byte-identical frames and the same sidecar sizes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core.atomic import atomic_write_text
from datasets.frame_selection import FRAME_RULE, reduce_release
from datasets.lpr4m_reader import split_frame_id
from datasets.prepare_fast import resize_from_disk
from datasets.prepare_report import REPORT_NAME
from datasets.prepare_shards import index_shards, shards_from_disk
from datasets.prepare_validate import validate_release
from datasets.release_files import (
    ANNOTATION_PREFIXES,
    LIST_PREFIXES,
    TEST_LISTS,
    PrepareError,
    layout_target,
    list_kind,
    url_stem,
)

log = logging.getLogger(__name__)

README_SETTINGS = [
    "--input_format",
    "txt",
    "--output_format",
    "files",
    "--image_size",
    "256",
    "--resize_mode",
    "keep_ratio",
    "--timeout",
    "10",
    "--retries",
    "0",
    "--incremental_mode",
    "incremental",
    "--distributor",
    "multiprocessing",
]
PLAN_NAME = "prepare_plan.json"
FORMATS = ("files", "webdataset")


@dataclass
class PrepareResult:
    out: Path
    report: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def find_url_lists(urls_dir: Path, which: str = "all") -> dict[str, Path]:
    """{prefix: path} of the URL lists in ``urls_dir``; ``which='test'`` takes the two test lists."""
    wanted = TEST_LISTS if which == "test" else LIST_PREFIXES
    out: dict[str, Path] = {}
    for prefix in wanted:
        found = sorted(urls_dir.glob(f"{prefix}_*.txt"))
        if len(found) != 1:
            what = "no file" if not found else f"{len(found)} files"
            raise PrepareError(f"{urls_dir}: expected one {prefix}_<N>.txt, found {what}")
        out[prefix] = found[0]
    return out


def read_url_list(path: Path) -> dict[str, str]:
    """{stem: url} of a URL list (one URL a line; blank lines skipped; a repeated stem kept once)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            url = line.strip()
            if url:
                out.setdefault(url_stem(url), url)
    return out


def img2dataset_command() -> list[str]:
    """The img2dataset executable beside this Python (or ``$LPR_BENCH_IMG2DATASET``)."""
    env = os.environ.get("LPR_BENCH_IMG2DATASET")
    if env:
        return env.split()
    exe = Path(sys.executable).parent / "img2dataset"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("img2dataset")
    if found:
        return [found]
    raise PrepareError("img2dataset is not installed: pip install -e '.[prepare]' (it pins img2dataset)")


def run_img2dataset(
    url_list: Path, out_dir: Path, *, processes: int, threads: int, shard_size: int, fmt: str = "files"
) -> None:
    """One img2dataset run over ``url_list`` (a file or a folder of lists; resumable: incremental
    mode skips finished shards); ``fmt`` replaces the README's ``--output_format files``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = list(README_SETTINGS)
    settings[settings.index("--output_format") + 1] = fmt
    cmd = img2dataset_command() + [
        f"--url_list={url_list}",
        f"--output_folder={out_dir}",
        *settings,
        "--number_sample_per_shard",
        str(shard_size),
        "--processes_count",
        str(processes),
        "--thread_count",
        str(threads),
    ]
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
    log_path = out_dir.parent / "img2dataset.log"
    with open(log_path, "ab") as logf:
        done = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise PrepareError(f"img2dataset failed on {url_list} (exit {done.returncode}); see {log_path}")


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
        except FileExistsError:
            pass
    else:
        os.replace(src, dst)


def layout_shard(shard: Path, image_stems: set[str], root: Path, link: bool) -> list[str]:
    """Move (or link) one finished shard's samples into the layout (a stem of an image list is a
    shop image, any other a frame); returns the stems placed."""
    marker = shard.parent / f"{shard.name}_layout.json"
    if marker.exists():
        return json.loads(marker.read_text(encoding="utf-8"))
    placed: list[str] = []
    for side in sorted(shard.glob("*.json")):
        try:
            meta = json.loads(side.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("status") != "success" or not meta.get("url"):
            continue
        stem = url_stem(str(meta["url"]))
        kind = "image" if stem in image_stems else "frame"
        dst = layout_target(root, kind, stem)
        jpg = side.with_suffix(".jpg")
        if dst is None or not jpg.exists():
            continue
        _place(jpg, dst, link)
        if kind == "frame":
            _place(side, dst.with_suffix(".json"), link)
        placed.append(stem)
    atomic_write_text(marker, json.dumps(placed) + "\n")
    return placed


def layout_download(download: Path, image_stems: set[str], root: Path, *, link: bool, workers: int) -> set[str]:
    """Lay out every finished shard (``<shard>_stats.json`` present), in parallel, one shard a task."""
    shards = [p for p in sorted(download.iterdir()) if p.is_dir() and (download / f"{p.name}_stats.json").exists()]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        parts = list(pool.map(lambda s: layout_shard(s, image_stems, root, link), shards))
    return {stem for part in parts for stem in part}


def copy_annotations(urls_dir: Path, lists: dict[str, Path], root: Path) -> list[str]:
    """Annotation files (and the test frame URL list, the test clips' frame list) -> ``annotations/``."""
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    names = [p for p in sorted(urls_dir.iterdir()) if p.is_file() and p.name.startswith(ANNOTATION_PREFIXES)]
    if "test_frame_url" in lists:
        names.append(lists["test_frame_url"])
    for src in names:
        dst = ann / src.name
        if dst.exists():
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return [p.name for p in names]


def _json_keys(ann: Path, pattern: str) -> dict[str, Any]:
    found = sorted(ann.glob(pattern))
    if len(found) != 1:
        return {}
    try:
        data = json.loads(found[0].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def build_report(
    root: Path, urls: dict[str, dict[str, str]], got: dict[str, set[str]], seconds: dict[str, float]
) -> dict[str, Any]:
    """The ``prepare_report.json`` contents (see :mod:`datasets.prepare_report`)."""
    failed_urls, failed_frames, failed_images = [], [], []
    lists: dict[str, Any] = {}
    for prefix, stems in urls.items():
        lost = [s for s in stems if s not in got[prefix]]
        lists[prefix] = {"urls": len(stems), "downloaded": len(stems) - len(lost), "failed": len(lost)}
        failed_urls.extend(stems[s] for s in lost)
        (failed_images if prefix.endswith("image_url") else failed_frames).extend(lost)
    ann = root / "annotations"
    clips: dict[str, int] = {}
    for stem in urls.get("test_frame_url", {}):
        parts = split_frame_id(stem)
        if parts is not None:
            clips[parts[0]] = clips.get(parts[0], 0) + (stem in got["test_frame_url"])
    gt = _json_keys(ann, "test_videoid_to_gtimage_*.json")
    without = sorted(c for c in set(gt) | set(clips) if clips.get(c, 0) == 0) if "test_frame_url" in urls else []
    failed_set = set(failed_images)
    gallery = _json_keys(ann, "test_liveid_to_gallery_*.json")
    test_images = set(urls.get("test_image_url", {}))
    missing = sorted(
        {
            i
            for ids in gallery.values()
            if isinstance(ids, list)
            for i in ids
            if isinstance(i, str) and (i in failed_set or (test_images and i not in test_images))
        }
    )
    return {
        "version": 1,
        "lists": lists,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "failed_urls": failed_urls,
        "failed_frame_ids": sorted(failed_frames),
        "failed_image_ids": sorted(failed_images),
        "test_clips_without_frames": without,
        "gallery_images_missing": missing,
    }


def _check_plan(out: Path, plan: dict[str, Any]) -> None:
    """A rerun must use the settings the root was started with (it resumes that download)."""
    path = out / PLAN_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old != plan:
            raise PrepareError(
                f"{path}: this root was started with {old}, not {plan}; rerun with those settings "
                "or prepare into another --out"
            )
    else:
        atomic_write_text(path, json.dumps(plan) + "\n")


def _download(
    lists: dict[str, Path],
    urls: dict[str, dict[str, str]],
    out: Path,
    *,
    fmt: str,
    processes: int,
    threads: int,
    shard_size: int,
    link: bool,
    seconds: dict[str, float],
) -> dict[str, set[str]]:
    """img2dataset over every list (one run over a folder of links to the lists: its start-up is
    paid once, shards are numbered across the lists), then the files layout or the shard index."""
    feed = out / "download" / "lists"
    feed.mkdir(parents=True, exist_ok=True)
    for path in lists.values():
        link_path = feed / path.name
        if not link_path.exists():
            os.symlink(path.resolve(), link_path)
    image_stems = {s for p in lists if list_kind(p) == "image" for s in urls[p]}
    shards = out / ("shards" if fmt == "webdataset" else "download/shards")
    t0 = time.perf_counter()
    run_img2dataset(feed, shards, processes=processes, threads=threads, shard_size=shard_size, fmt=fmt)
    seconds["download"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if fmt == "webdataset":
        placed = index_shards(shards, image_stems)
    else:
        placed = layout_download(shards, image_stems, out, link=link, workers=processes)
    seconds["index" if fmt == "webdataset" else "layout"] = time.perf_counter() - t1
    return {p: {s for s in urls[p] if s in placed} for p in lists}


def prepare(
    urls_dir: Path,
    out: Path,
    *,
    which: str = "all",
    processes: int = 4,
    threads: int = 64,
    shard_size: int = 50000,
    link: bool = False,
    fast: bool = False,
    frames_per_clip: int = 10,
    fmt: str = "files",
) -> PrepareResult:
    """Validate, reduce to the frames read at ``frames_per_clip`` (0: every frame), download (or,
    ``fast``, resize from ``<urls_dir>/../www``) and lay out (``fmt`` "files") or index (``fmt``
    "webdataset") the release; see the module doc."""
    urls_dir, out = Path(urls_dir), Path(out)
    if not urls_dir.is_dir():
        raise PrepareError(f"{urls_dir}: --urls must be the folder holding the URL lists and annotation files")
    if fmt not in FORMATS:
        raise PrepareError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    lists = find_url_lists(urls_dir, which)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    faults = validate_release(urls_dir, lists, which)
    seconds["validate"] = time.perf_counter() - t0
    if faults:
        raise PrepareError("\n".join(faults))
    out.mkdir(parents=True, exist_ok=True)
    _check_plan(out, {"frames_per_clip": frames_per_clip, "format": fmt, "lists": which})
    listed: dict[str, int] = {}
    used = lists
    if frames_per_clip > 0:
        t0 = time.perf_counter()
        used, counts = reduce_release(urls_dir, lists, frames_per_clip, out / "download" / "reduced")
        listed = {p: c["listed"] for p, c in counts.items()}
        seconds["reduce"] = time.perf_counter() - t0
    urls = {prefix: read_url_list(path) for prefix, path in used.items()}
    if fast:
        t0 = time.perf_counter()
        todo = {p: (urls[p], list_kind(p)) for p in used}
        if fmt == "webdataset":
            got = shards_from_disk(
                todo, urls_dir.parent / "www", out / "shards", shard_size=shard_size, workers=processes
            )
        else:
            got = resize_from_disk(todo, urls_dir.parent / "www", out, workers=processes)
        seconds["resize"] = time.perf_counter() - t0
    else:
        got = _download(
            used,
            urls,
            out,
            fmt=fmt,
            processes=processes,
            threads=threads,
            shard_size=shard_size,
            link=link,
            seconds=seconds,
        )
    copy_annotations(urls_dir, lists, out)
    report = build_report(out, urls, got, seconds)
    for prefix, n in listed.items():
        report["lists"][prefix]["listed"] = n
    report.update(
        {
            "frames_per_clip": frames_per_clip,
            "frame_rule": FRAME_RULE if frames_per_clip > 0 else "every frame",
            "format": fmt,
        }
    )
    atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=1) + "\n")
    log.info("prepare: %s", {k: v for k, v in report["lists"].items()})
    return PrepareResult(out=out, report=report, seconds=seconds)
