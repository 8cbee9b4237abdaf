"""Re-scoring a submission: its rankings against the dataset's ground truth, never its claims.

:func:`rescore` loads a submission (schema and consistency checked), checks it belongs to the
split it is scored on, maps its ranked ids back to gallery indices, recomputes every metric the
leaderboard shows (R@k, mAP, intervals, breakdowns) and compares them with the claimed ones
within ``METRIC_TOLERANCE``; a fault is a :class:`~benchmark.record.submission.SubmissionError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from benchmark.core import safe_json
from benchmark.evaluation.metrics import as_rank_array, compute_metrics, map_upper_bound, ranks_from_lists, recall_curve
from benchmark.evaluation.scoring import SplitIndex
from benchmark.record.record import Submission
from benchmark.record.submission import METRIC_TOLERANCE, _raise, load_submission
from datasets.records import DatasetSplits


@dataclass
class RescoreReport:
    """Outcome of a successful :func:`rescore`: the re-scored numbers and what was checked."""

    path: Path
    submission: Submission  # the parsed submission, rankings included
    metrics: dict[str, Any]  # re-scored: R@k (k <= topk_saved), mAP@topk_saved, CIs, breakdowns
    topk: int
    curve: list[float]  # re-scored R@k for k = 1..topk
    verified: list[str] = field(default_factory=list)  # claimed numbers re-scored exactly
    bounded: dict[str, tuple[float, float]] = field(default_factory=dict)  # claimed numbers within bounds
    unverifiable: list[str] = field(default_factory=list)
    gt_rank: Optional[np.ndarray] = None  # [Nq, G] re-scored ground-truth ranks, split order (paired tests)

    def summary(self) -> str:
        sub = self.submission
        ov = self.metrics["overall"]
        nums = ", ".join(f"{k} {v['value']:.2f}" for k, v in ov.items())
        lines = [
            f"{self.path}: OK - {sub['method']['name']}{'-' + sub['method']['variant'] if sub['method']['variant'] else ''} "
            f"on {sub['dataset']['name']} ({self.metrics['num_queries']} queries, top-{self.topk} lists)",
            f"  re-scored: {nums}",
            f"  verified exactly (tolerance {METRIC_TOLERANCE} points, CIs included): {', '.join(self.verified) or 'none'}",
        ]
        for name, (lo, hi) in self.bounded.items():
            lines.append(
                f"  {name}: claimed value within the bounds [{lo:.4f}, {hi:.4f}] implied by the top-{self.topk} lists"
            )
        if self.unverifiable:
            lines.append(f"  not verifiable from top-{self.topk} lists: {', '.join(self.unverifiable)}")
        return "\n".join(lines)


def rescore(
    submission_path: Path | str,
    splits: DatasetSplits,
    *,
    max_bytes: int = safe_json.MAX_BYTES,
    tolerance: float = METRIC_TOLERANCE,
    loaded: Optional[dict[str, Any]] = None,
) -> RescoreReport:
    """Re-score a submission's rankings against ``splits``' ground truth; raise on any fault.

    Faults (all collected, then raised together as :class:`SubmissionError`): unreadable or
    oversized file, schema violations, wrong dataset or annotation checksum, unknown,
    duplicate or missing query ids, unknown or duplicate gallery ids, ids outside the
    query's gallery group, a ranking for a query whose clip is missing, claimed metrics
    (values, CIs, breakdowns) that differ from the re-scored ones by more than
    ``tolerance`` percentage points, a full mAP outside its bounds. ``loaded``: the file as
    :func:`load_submission` already read and validated it (the leaderboard reads each file once).
    """
    path = Path(submission_path)
    sub = loaded if loaded is not None else load_submission(path, max_bytes=max_bytes)
    index = SplitIndex.from_splits(splits)
    faults = _dataset_faults(sub, splits)
    _raise(str(path), faults)
    topk = sub["protocol"]["topk_saved"]
    ranked, faults = _map_rankings(sub["rankings"], index)
    _raise(str(path), faults)

    # a ground truth outside the query's group can never be found: a sentinel that matches nothing
    gt_rank = ranks_from_lists(
        ranked, [[index.group_items(qi).get(g, ("absent", g)) for g in gts] for qi, gts in enumerate(index.gt_ids)]
    )
    claimed = sub["metrics"]
    ks_ok = [k for k in claimed["ks"] if k <= topk]
    unverifiable = [f"R{k}" for k in claimed["ks"] if k > topk]
    map_cut = claimed["map_cutoff"] if claimed["map_cutoff"] == topk else None
    boot = claimed["bootstrap"]
    metrics = compute_metrics(
        gt_rank,
        ks=ks_ok or [1],
        map_cutoff=topk,
        full_map=False,
        attributes=index.attributes,
        bootstrap=boot["resamples"],
        seed=boot["seed"],
        breakdown_ci=_claims_breakdown_ci(claimed),
    )
    names = [f"R{k}" for k in ks_ok] + ([f"mAP@{map_cut}"] if map_cut is not None else [])
    if claimed["map_cutoff"] is not None and map_cut is None:
        unverifiable.append(f"mAP@{claimed['map_cutoff']}")
    faults = _compare(claimed, metrics, names, tolerance)
    bounded: dict[str, tuple[float, float]] = {}
    if "mAP" in claimed["overall"]:
        lo = metrics["overall"][f"mAP@{topk}"]["value"]
        hi = map_upper_bound(as_rank_array(gt_rank), topk)
        value = claimed["overall"]["mAP"]["value"]
        if not (lo - tolerance <= value <= hi + tolerance):
            faults.append(
                f"metrics.overall.mAP: claimed {value!r} is outside [{lo:.6f}, {hi:.6f}], "
                f"the range the top-{topk} lists allow"
            )
        bounded["mAP"] = (lo, hi)
    _raise(f"{path} (claims do not match the re-scored rankings)", faults)
    return RescoreReport(
        path=path,
        submission=sub,
        metrics=metrics,
        topk=topk,
        curve=[float(x) for x in recall_curve(gt_rank, topk)],
        verified=names,
        bounded=bounded,
        unverifiable=unverifiable,
        gt_rank=as_rank_array(gt_rank),
    )


def _claims_breakdown_ci(claimed: Mapping[str, Any]) -> bool:
    for buckets in claimed["breakdowns"].values():
        for bucket in buckets.values():
            for name, entry in bucket.items():
                if name != "n":
                    return entry["ci95"] is not None
    return True


def _dataset_faults(sub: Submission, splits: DatasetSplits) -> list[str]:
    ds = sub["dataset"]
    faults = []
    if ds["annotation_checksum"] != splits.annotation_checksum:
        faults.append(
            f"dataset.annotation_checksum {ds['annotation_checksum'][:12]}... does not match the data's "
            f"{splits.annotation_checksum[:12]}... (scored against other annotations)"
        )
    if ds["num_queries"] != len(splits.queries) or ds["num_gallery"] != len(splits.gallery):
        faults.append(
            f"dataset: {ds['num_queries']} queries / {ds['num_gallery']} gallery items claimed, "
            f"the data has {len(splits.queries)} / {len(splits.gallery)}"
        )
    if bool(ds["grouped"]) != bool(splits.grouped):
        faults.append(
            f"dataset.grouped={ds['grouped']} but the data is {'grouped' if splits.grouped else 'one global gallery'}"
        )
    without = sum(1 for q in splits.queries if q.missing)
    if ds.get("num_queries_without_frames") not in (None, without):  # absent in files that predate it
        faults.append(
            f"dataset.num_queries_without_frames={ds['num_queries_without_frames']} but {without} of the "
            "data's queries have no frames"
        )
    return faults


def _map_rankings(rankings: Sequence[Sequence[Any]], index: SplitIndex) -> tuple[list[list[Any]], list[str]]:
    """Rankings in split order as gallery indices; faults for every id problem."""
    faults: list[str] = []
    pos = {q: i for i, q in enumerate(index.query_ids)}
    all_gallery = set(index.gallery_ids)
    ranked: list[Optional[list[Any]]] = [None] * len(index.query_ids)
    for i, (qid, ids) in enumerate(rankings):
        qi = pos.get(qid)
        if qi is None:
            faults.append(f"rankings[{i}]: unknown query id {qid!r}")
            continue
        if ranked[qi] is not None:
            continue  # duplicate: already reported by consistency_faults
        if not bool(index.valid[qi]) and ids:
            faults.append(f"rankings[{i}] query {qid!r}: its clip is missing from the release, yet it has a ranking")
        items = index.group_items(qi)
        row = []
        for g in ids:
            j = items.get(g)
            if j is None:
                if g in all_gallery:
                    faults.append(
                        f"rankings[{i}] query {qid!r}: gallery id {g!r} is outside the query's gallery group "
                        f"{index.query_group(qi)!r}"
                    )
                else:
                    faults.append(f"rankings[{i}] query {qid!r}: unknown gallery id {g!r}")
                continue
            row.append(j)
        ranked[qi] = row
    missing = [index.query_ids[qi] for qi, r in enumerate(ranked) if r is None]
    if missing:
        faults.append(f"rankings: {len(missing)} queries of the split are missing, e.g. {missing[:3]}")
    return [r if r is not None else [] for r in ranked], faults


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol


def _compare(claimed: Mapping[str, Any], rescored: Mapping[str, Any], names: Sequence[str], tol: float) -> list[str]:
    faults: list[str] = []

    def check(where: str, c: Mapping[str, Any], r: Mapping[str, Any]) -> None:
        if not _close(c["value"], r["value"], tol):
            faults.append(f"{where}: claimed {c['value']!r}, re-scored {r['value']!r}")
        if c["ci95"] is not None and r["ci95"] is not None:
            if not all(_close(x, y, tol) for x, y in zip(c["ci95"], r["ci95"])):
                faults.append(f"{where}.ci95: claimed {c['ci95']}, re-scored {r['ci95']}")
        elif (c["ci95"] is None) != (r["ci95"] is None):
            faults.append(f"{where}.ci95: claimed {c['ci95']}, re-scored {r['ci95']}")

    for name in names:
        if name in claimed["overall"]:
            check(f"metrics.overall.{name}", claimed["overall"][name], rescored["overall"][name])
    cb, rb = claimed["breakdowns"], rescored["breakdowns"]
    for attr, buckets in cb.items():
        if attr not in rb:
            faults.append(f"metrics.breakdowns.{attr}: the dataset's queries have no attribute {attr!r}")
            continue
        for value, bucket in buckets.items():
            if value not in rb[attr]:
                faults.append(f"metrics.breakdowns.{attr}.{value}: no query has {attr}={value!r}")
                continue
            rbucket = rb[attr][value]
            if bucket["n"] != rbucket["n"]:
                faults.append(
                    f"metrics.breakdowns.{attr}.{value}.n: claimed {bucket['n']}, the data has {rbucket['n']}"
                )
            for name in names:
                if name in bucket:
                    check(f"metrics.breakdowns.{attr}.{value}.{name}", bucket[name], rbucket[name])
    return faults
