"""Data-root integrity check: ``check_dataset(name, root) -> CheckReport``.

Walks the annotations with the dataset's own parser in collecting mode (malformed rows, bad JSON,
non-UTF-8 text, duplicate ids, ground truth outside its gallery group, paths escaping the root,
missing annotation files, an empty training split), then every file the records reference:
symbolic links leading out of the data root, missing, empty or unreadable files, JPEGs without
their end-of-image marker (truncated), on a sharded root every tar shard (a truncated or corrupt
one is named once, its members are not listed one by one), and, with ``deep=True``, a full decode of every image
and an open + first-frame decode of every video.

Missing MovingFashion videos are reported (named) as warnings up to ``KNOWN_MISSING_VIDEOS``, the
number the public archive lacks (22 train + 1 test); beyond that they are errors. ``report.ok`` is
False as soon as any error-level fault is found. Wired to ``run_benchmark.py check-data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from datasets import faults as F
from datasets.decoding import VideoFile, decode_image, has_jpeg_end, is_jpeg
from datasets.errors import DataError
from datasets.faults import Faults
from datasets.lpr4m import read_lpr4m
from datasets.movingfashion import read_movingfashion
from datasets.prepare_report import read_report
from datasets.records import DatasetSplits
from datasets.shard_store import CORRUPT_SHARD, read_path, split_member, verify_shard

KNOWN_MISSING_VIDEOS = 23
# warnings, not errors: downloads the prepare report lists as failed, boxes dropped, missing videos (up to the count above)
WARNING_KINDS = frozenset((F.MISSING_VIDEO, F.FAILED_DOWNLOAD, F.BAD_BOX))
LAYOUT_READERS = ("lpr4m", "movingfashion")
EMPTY_SPLIT = "empty_split"  # a split with no records (e.g. an empty training annotation file)
TRAINING_FILES = ("training_videoinfo*.txt", "train.json")  # the layouts' training annotations


@dataclass
class CheckReport:
    """Fault counts and first offending places per kind; ``ok`` when no error-level fault."""

    dataset: str
    root: Path
    layout: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    error_kinds: set[str] = field(default_factory=set)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error_kinds

    @property
    def num_errors(self) -> int:
        return sum(n for k, n in self.counts.items() if k in self.error_kinds)

    def format(self) -> str:
        lines = [f"check-data {self.dataset} at {self.root}" + (f" (layout {self.layout})" if self.layout else "")]
        if self.stats:
            lines.append("  " + ", ".join(f"{k}: {v}" for k, v in self.stats.items()))
        if not self.counts:
            lines.append("  no faults found")
        for kind in sorted(self.counts, key=lambda k: (k not in self.error_kinds, k)):
            level = "ERROR" if kind in self.error_kinds else "warning"
            lines.append(f"  {level:7s} {kind}: {self.counts[kind]}")
            lines.extend(f"          {ex}" for ex in self.examples.get(kind, []))
        lines.append("OK" if self.ok else f"FAILED: {self.num_errors} error(s)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "layout": self.layout,
            "ok": self.ok,
            "counts": dict(self.counts),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "error_kinds": sorted(self.error_kinds),
            "stats": dict(self.stats),
        }


def check_dataset(name: str, root: Path, *, deep: bool = False) -> CheckReport:
    """Check the data root of dataset ``name`` (``lpr4m``, ``movingfashion`` or their ``-synth``
    variants, which share the layouts). ``deep`` decodes every image and opens every video."""
    layout_name = name[: -len("-synth")] if name.endswith("-synth") else name
    if layout_name not in LAYOUT_READERS:
        raise ValueError(f"check_dataset: unknown dataset {name!r}; known: {', '.join(LAYOUT_READERS)} (and -synth)")
    root = Path(os.path.abspath(root))
    faults = Faults(strict=False)
    splits: Optional[DatasetSplits] = None
    try:
        if layout_name == "lpr4m":
            splits = read_lpr4m(root, faults)
        else:
            splits = read_movingfashion(root, faults)
    except DataError as e:  # the root itself is unusable (not a folder, not this layout)
        faults.error(e.kind or F.MISSING_ANNOTATION, e.path or root, str(e).split(": ", 1)[-1])
    report = CheckReport(dataset=name, root=root, layout=splits.layout if splits else "")
    if splits is not None:
        images = _image_files(splits)
        videos = _video_files(splits)
        report.stats = {
            "train_pairs": len(splits.train),
            "queries": len(splits.queries),
            "gallery": len(splits.gallery),
            "image_files": len(images),
            "video_files": len(videos),
            "missing_videos": len(splits.missing),
        }
        report.stats.update(_prepare_stats(root, splits))
        if not splits.train and "training_not_prepared" not in report.stats:
            _report_empty_training(root, faults)
        inside = _InsideRoot(root)
        bad_shards = _check_shards(root, faults)
        for path in images:
            member = split_member(path)
            if member is not None and member[0].is_file():
                if str(member[0]) not in bad_shards:  # a bad shard is named once, not per member
                    _check_member(path, faults, deep)
            elif inside.check(path, faults):
                _check_image(path, faults, deep)
        for path in videos:
            if inside.check(path, faults):
                _check_video(path, faults, deep)
    report.counts = dict(faults.counts)
    report.examples = {k: [f"{f.where}: {f.message}" for f in v] for k, v in faults.examples.items()}
    report.error_kinds = {k for k in faults.counts if k not in WARNING_KINDS}
    if faults.counts.get(F.MISSING_VIDEO, 0) > KNOWN_MISSING_VIDEOS:
        report.error_kinds.add(F.MISSING_VIDEO)
    return report


def _prepare_stats(root: Path, splits: DatasetSplits) -> dict[str, int]:
    """Counts from ``prepare_report.json`` (the LPR4M prepare step), when the root has one."""

    try:
        prep = read_report(root)
    except DataError:
        return {}
    if prep is None:
        return {}
    out = {
        "failed_downloads": prep.num_failed,
        "queries_without_frames": sum(q.missing for q in splits.queries),
        "gallery_images_missing": len(prep.gallery_missing),
    }
    if prep.lists and "training_frame_url" not in prep.lists:  # prepare --lists test: evaluation only
        out["training_not_prepared"] = 1
    return out


def _report_empty_training(root: Path, faults: Faults) -> None:
    """An error naming the training annotation file(s) that yielded no training pair."""
    found = sorted(
        {p for pattern in TRAINING_FILES for folder in (root, root / "annotations") for p in folder.glob(pattern)}
    )
    where = ", ".join(str(p) for p in found) if found else str(root)
    faults.error(
        EMPTY_SPLIT, where, "the training split is empty: no training pair could be read from its annotation file(s)"
    )


class _InsideRoot:
    """Whether a referenced file really lies under the data root once symbolic links are
    resolved (a link leading out of the root is an error, like a ``../`` path)."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.dirs: dict[str, str] = {}

    def check(self, path: Path, faults: Faults) -> bool:
        parent = os.path.dirname(path)
        real_parent = self.dirs.get(parent)
        if real_parent is None:
            real_parent = self.dirs[parent] = os.path.realpath(parent)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_parent, os.path.basename(path))
        if real == self.root or real.startswith(self.root + os.sep):
            return True
        faults.error(F.PATH_ESCAPE, path, f"resolves outside the data root (a symbolic link to {real})")
        return False


def _image_files(splits: DatasetSplits) -> list[Path]:
    seen: dict[Path, None] = {}
    for p in splits.train:
        seen.update(dict.fromkeys(p.clip.frame_paths))
        seen[p.image_path] = None
    for q in splits.queries:
        seen.update(dict.fromkeys(q.clip.frame_paths))
    for g in splits.gallery:
        seen[g.image_path] = None
    return list(seen)


def _video_files(splits: DatasetSplits) -> list[Path]:
    clips: Iterable = [p.clip for p in splits.train] + [q.clip for q in splits.queries]
    return list(dict.fromkeys(c.video_path for c in clips if c.video_path is not None))


def _check_image(path: Path, faults: Faults, deep: bool) -> None:
    try:
        size = os.stat(path).st_size
        if size == 0:
            faults.error(F.UNREADABLE_FILE, path, "file is empty (0 bytes)")
            return
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - 64))
            tail = f.read()
    except FileNotFoundError:
        faults.error(F.MISSING_FILE, path, "file is missing")
        return
    except OSError as e:
        faults.error(F.UNREADABLE_FILE, path, f"cannot read file ({e.strerror or e})")
        return
    if is_jpeg(head) and not has_jpeg_end(tail):
        faults.error(F.TRUNCATED_JPEG, path, "truncated JPEG (no end-of-image marker)")
        return
    if deep or not is_jpeg(head):
        try:
            decode_image(path, backend="pil-draft")
        except DataError as e:
            faults.error(e.kind or F.UNREADABLE_FILE, path, str(e).split(": ", 1)[-1])


def _check_shards(root: Path, faults: Faults) -> set[str]:
    """Every tar of a sharded root (``prepare --format webdataset``): a truncated or corrupt one is
    an error naming it in one line; returns those shards."""
    bad: set[str] = set()
    for tar in sorted((root / "shards").glob("*.tar")) if (root / "shards").is_dir() else ():
        fault = verify_shard(tar)
        if fault is not None:
            faults.error(CORRUPT_SHARD, tar, fault + "; a run reading it stops (prepare again to fetch it)")
            bad.add(str(tar))
    return bad


def _check_member(path: Path, faults: Faults, deep: bool) -> None:
    """A frame or image kept in a shard: present in its tar, a whole JPEG (decoded with ``deep``)."""
    try:
        data = read_path(path)
    except FileNotFoundError:
        faults.error(F.MISSING_FILE, path, "file is missing (not in its shard)")
        return
    except DataError as e:
        faults.error(e.kind or CORRUPT_SHARD, path, str(e).split(": ", 1)[-1])
        return
    if is_jpeg(data) and not has_jpeg_end(data[-64:]):
        faults.error(F.TRUNCATED_JPEG, path, "truncated JPEG (no end-of-image marker)")
    elif deep or not is_jpeg(data):
        try:
            decode_image(path, backend="pil-draft")
        except DataError as e:
            faults.error(e.kind or F.UNREADABLE_FILE, path, str(e).split(": ", 1)[-1])


def _check_video(path: Path, faults: Faults, deep: bool) -> None:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        faults.error(F.MISSING_VIDEO, path, "video file is missing")
        return
    except OSError as e:
        faults.error(F.UNREADABLE_FILE, path, f"cannot stat video ({e.strerror or e})")
        return
    if size == 0:
        faults.error(F.UNREADABLE_FILE, path, "video file is empty (0 bytes)")
        return
    if deep:
        try:
            VideoFile(path).get([0])
        except DataError as e:
            faults.error(e.kind or F.UNREADABLE_FILE, path, str(e).split(": ", 1)[-1])
