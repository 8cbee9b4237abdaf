"""Which submission files the leaderboard reads: refusals, skips and duplicates, one line each.

:func:`gather` lists ``<results>/submissions/*.json[.gz]`` and returns the submissions to
build rows from, with what it left out:

* a symbolic link or anything but a regular file is refused (a link could pull in a file
  from anywhere, and a FIFO or device would block or never end);
* a file that cannot be read, fails its schema or its internal consistency is skipped with
  one line naming it and its first fault (the rest of the leaderboard is still regenerated;
  the ``leaderboard`` command exits non-zero when anything was skipped);
* duplicates are listed once, with a note naming the other files: two submissions of the
  same row (dataset instance, profile, method and variant, stage, seed) that hold the same
  rankings or record the same identity (:func:`benchmark.record.run_identity.comparable`). The file
  under its canonical name (:func:`benchmark.record.submission.submission_filename`) is kept, else
  the first by name. Rankings alone do not make a duplicate: untrained controls of variants
  that differ only in training losses (RICE's ``icl`` / ``icl+pmd``) rank identically and are
  each their own trained row's control.

Per-row flags for the renderer (:func:`flags`): ``dirty`` (True / False / None when the
submission does not say) from ``provenance.git.dirty``, and ``partial``
(:func:`benchmark.record.run_identity.is_partial`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.record.record import Submission
from benchmark.record.run_identity import comparable, is_partial
from benchmark.record.submission import (
    SUBMISSIONS_SUBDIR,
    SubmissionError,
    load_submission,
    rerank_stage,
    submission_filename,
    submission_start,
)

SUFFIXES = (".json", ".json.gz")


@dataclass
class Collected:
    """A readable submission and the notes its row carries (duplicates listed once)."""

    path: Path
    submission: Submission
    duplicates: list[str] = field(default_factory=list)  # file names of the same submission, not listed


def one_line(exc: BaseException) -> str:
    """A possibly multi-line fault as one line: its first line, plus the first fault listed
    under it (``N problem(s):`` messages), without the file name it starts with."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1:
        text += " " + lines[1]
    return text


def _refusal(path: Path) -> Optional[str]:
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link: refused (a submission must be a regular file in this folder; copy it in)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file: refused"
    return None


def row_key(sub: Submission) -> str:
    """The row a submission fills: dataset instance, profile, method and variant, stage, seed."""
    ds, prov = sub["dataset"], sub["provenance"]
    weights = prov.get("initial_weights") or {}
    key = [
        ds["name"],
        ds.get("annotation_checksum"),
        ds.get("size"),
        ds.get("seed"),
        sub["profile"]["name"],
        sub["method"]["name"],
        sub["method"].get("variant") or "",
        rerank_stage(sub.get("protocol", {})),
        submission_start(sub),
        weights.get("sha256"),
        is_partial(sub),
        prov.get("seed"),
    ]
    return json.dumps(key, sort_keys=True, default=str)


def rankings_digest(sub: Submission) -> str:
    return hashlib.sha256(json.dumps(sub["rankings"], separators=(",", ":")).encode("utf-8")).hexdigest()


def identity_digest(sub: Submission) -> str:
    return hashlib.sha256(json.dumps(comparable(sub), sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _canonical(path: Path, sub: Submission) -> bool:
    name = submission_filename(sub)
    return path.name in (name, name + ".gz")


def gather(results_dir: Path) -> tuple[list[Collected], list[tuple[str, str]]]:
    """(submissions to list, skipped ``(path, why)``) of ``results_dir``; see the module docstring."""
    sub_dir = Path(results_dir) / SUBMISSIONS_SUBDIR
    if not sub_dir.is_dir():
        return [], []
    skipped: list[tuple[str, str]] = []
    loaded: list[Collected] = []
    for path in sorted(sub_dir.iterdir()):
        if not path.name.endswith(SUFFIXES):
            continue
        why = _refusal(path)
        if why is None:
            try:
                loaded.append(Collected(path, load_submission(path)))
                continue
            except SubmissionError as exc:
                why = one_line(exc).removeprefix(f"{path}: ").removeprefix(f"{path} ")
        skipped.append((str(path), why))
    return _merge_duplicates(loaded), skipped


def _merge_duplicates(items: list[Collected]) -> list[Collected]:
    groups: dict[str, list[Collected]] = {}
    for item in items:
        groups.setdefault(row_key(item.submission), []).append(item)
    keep: list[Collected] = []
    for members in groups.values():
        clusters: list[list[Collected]] = []
        for item in members:
            marks = (rankings_digest(item.submission), identity_digest(item.submission))
            for cluster in clusters:
                first = cluster[0].submission
                if marks[0] == rankings_digest(first) or marks[1] == identity_digest(first):
                    cluster.append(item)
                    break
            else:
                clusters.append([item])
        for cluster in clusters:
            cluster.sort(key=lambda c: (not _canonical(c.path, c.submission), c.path.name))
            head = cluster[0]
            head.duplicates = [c.path.name for c in cluster[1:]]
            keep.append(head)
    keep.sort(key=lambda c: c.path.name)
    return keep


def duplicate_note(item: Collected) -> str:
    """The note of a row that stands for several files ('' for none)."""
    if not item.duplicates:
        return ""
    return f"duplicate submission: {', '.join(item.duplicates)} holds the same run; listed once"


def flags(sub: Submission) -> dict[str, Any]:
    """``{"dirty": True | False | None, "partial": bool}`` of a submission (see the module docstring)."""
    git = sub.get("provenance", {}).get("git") or {}
    dirty = git.get("dirty") if isinstance(git, Mapping) else None
    return {"dirty": dirty if isinstance(dirty, bool) else None, "partial": is_partial(sub)}
