"""Re-scored numbers kept by content, so that regenerating the leaderboard re-scores a submission
only when its file, its data or the scoring code changed.

:func:`rescored` returns what the leaderboard needs from :func:`benchmark.record.rescore.rescore`
(the re-scored metrics, the rank-k curve, the ranking depth and the per-query R1 and AP@K of the
paired tests). The entry lives at ``<LPR_BENCH_CACHE or <repo>/.cache>/rescore/<key>.json``, where
the key hashes

* the submission file's bytes (sha256),
* the split's annotation checksum (the ground truth it was scored against), and
* the scoring code: the source of ``benchmark/evaluation/metrics.py`` and
  ``benchmark/record/submission.py`` and :data:`VERSION`.

An entry is verified on read: it must name the same key and its payload must hash to the digest
stored beside it; anything else (a truncated or edited file, a collision of names) is ignored
and the submission re-scored, and the entry rewritten (atomically). A submission whose claims do
not check out raises as before and is never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmark.core.atomic import atomic_write_bytes
from benchmark.core.digest import sha256_file
from benchmark.core.paths import REPO_ROOT
from benchmark.evaluation.metrics import per_query_values
from benchmark.record.rescore import rescore
from datasets.records import DatasetSplits

VERSION = 1
SUBDIR = "rescore"
_SCORING_SOURCES = (
    REPO_ROOT / "benchmark" / "evaluation" / "metrics.py",
    REPO_ROOT / "benchmark" / "record" / "submission.py",
)


def cache_root() -> Path:
    """``$LPR_BENCH_CACHE`` or ``<repo>/.cache``."""
    root = os.environ.get("LPR_BENCH_CACHE")
    return Path(root) if root else REPO_ROOT / ".cache"


def cache_dir() -> Path:
    return cache_root() / SUBDIR


_SCORER: Optional[str] = None


def scorerdigest() -> str:
    """Hash of the scoring code (module docstring), computed once per process."""
    global _SCORER
    if _SCORER is None:
        h = hashlib.sha256(f"v{VERSION}".encode())
        for src in _SCORING_SOURCES:
            h.update(src.read_bytes())
        _SCORER = h.hexdigest()
    return _SCORER


def cache_key(path: Path, splits: DatasetSplits) -> str:
    blob = json.dumps([sha256_file(path), splits.annotation_checksum, scorerdigest()])
    return hashlib.sha256(blob.encode()).hexdigest()


def digest(payload: Any) -> str:
    """sha256 of ``payload`` as canonical JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_entry(entry: Path, key: str) -> Optional[dict[str, Any]]:
    """The payload of a cache entry written by :func:`write_entry` for ``key``, or None when it is
    missing, unreadable, of another key or does not match its digest."""
    try:
        obj = json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or obj.get("key") != key or not isinstance(obj.get("payload"), dict):
        return None
    return obj["payload"] if obj.get("digest") == digest(obj["payload"]) else None


def rescored(path: Path, splits: DatasetSplits, loaded: dict[str, Any], *, use_cache: bool = True) -> dict[str, Any]:
    """``{"metrics", "curve", "topk", "per_query": {"R1": [...], "mAP": [...]}, "cached": bool}`` of
    the submission at ``path`` (already read as ``loaded``) against ``splits``; see the module docstring."""
    key = cache_key(path, splits) if use_cache else ""
    entry = cache_dir() / f"{key}.json"
    if use_cache:
        hit = read_entry(entry, key)
        if hit is not None:
            return {**hit, "cached": True}
    report = rescore(path, splits, loaded=loaded)
    pq = per_query_values(report.gt_rank, [1], report.topk, full_map=False)
    payload = {
        "metrics": report.metrics,
        "curve": [float(v) for v in report.curve],
        "topk": int(report.topk),
        "per_query": {"R1": pq["R1"].tolist(), "mAP": pq[f"mAP@{report.topk}"].tolist()},
    }
    payload = json.loads(json.dumps(payload, default=_plain))  # the same types a read returns
    if use_cache:
        write_entry(entry, key, payload)
    return {**payload, "cached": False}


def write_entry(entry: Path, key: str, payload: dict[str, Any]) -> None:
    atomic_write_bytes(
        entry,
        json.dumps(
            {"key": key, "digest": digest(payload), "payload": payload}, sort_keys=True, separators=(",", ":")
        ).encode("utf-8"),
    )


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-able: {type(obj).__name__}")
