"""Retrieval metrics from ground-truth ranks: R@k, mAP, bootstrap CIs, per-attribute breakdowns.

Everything is computed from one integer array ``gt_rank`` [Nq, G] (see
:mod:`benchmark.retrieval`): ``>= 1`` the 1-based rank of a ground truth in the query's
ranking, ``0`` a ground truth that was not retrieved (cannot be ranked, or lies beyond a
truncated list), ``-1`` padding. Definitions (all in percent, denominator = every query of
the split; a query with no prediction or a missing clip has only ``0`` entries: a miss):

``R@k``    hit@k: 100 x fraction of queries with at least one ground truth at rank <= k.
``mAP``    mean over queries of AP_q = (1/|G_q|) * sum_i i / r_i, where r_1 < r_2 < ... are
           the ranks of q's ground truths found in its ranking and |G_q| is its number of
           distinct ground truths (found or not). Ties do not arise: ranks are distinct
           (ties in score are broken by gallery order). Computed on the full ranking this
           is the usual non-interpolated AP.
``mAP@K``  the same sum restricted to r_i <= K, still divided by |G_q|. It can be computed
           exactly from top-K lists (submissions keep K = ``EvalConfig.topk_saved``), and
           mAP@K <= mAP <= mAP@K + (see :func:`map_upper_bound`).

Confidence intervals: percentile bootstrap over queries, ``B`` resamples of size Nq drawn
with replacement by ``numpy.random.Generator(PCG64(seed))``; all metrics of one resample use
the same draw; the interval is the (2.5, 97.5) percentiles of the resampled means. Given the
same ``gt_rank``, seed and B, the intervals are bit-for-bit reproducible, which lets a
re-scorer verify them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

UNKNOWN = "unknown"  # breakdown bucket for queries that lack an attribute


def as_rank_array(gt_rank: Any) -> np.ndarray:
    """``gt_rank`` (tensor or array-like, [Nq, G]) as an int64 numpy array, validated."""
    if hasattr(gt_rank, "detach"):
        gt_rank = gt_rank.detach().cpu().numpy()
    arr = np.asarray(gt_rank, dtype=np.int64)
    if arr.ndim != 2:
        raise ValueError(f"gt_rank must be [Nq, G], got shape {arr.shape}")
    if arr.size and arr.min() < -1:
        raise ValueError("gt_rank entries must be >= -1")
    return arr


def hits_at(gt_rank: np.ndarray, k: int) -> np.ndarray:
    """[Nq] float 0/1: any ground truth at rank <= k."""
    return ((gt_rank >= 1) & (gt_rank <= k)).any(axis=1).astype(np.float64)


def average_precision(gt_rank: np.ndarray, cutoff: Optional[int] = None) -> np.ndarray:
    """[Nq] AP per query (0..1) as defined in the module docstring (``cutoff`` -> AP@K)."""
    n_gt = (gt_rank >= 0).sum(axis=1)
    found = gt_rank >= 1
    if cutoff is not None:
        found &= gt_rank <= cutoff
    big = np.iinfo(np.int64).max
    r = np.sort(np.where(found, gt_rank, big), axis=1)
    ok = r != big
    i = np.cumsum(ok, axis=1)  # i-th found ground truth (1-based) at sorted position
    prec = np.where(ok, i / np.where(ok, r, 1), 0.0)
    return np.where(n_gt > 0, prec.sum(axis=1) / np.maximum(n_gt, 1), 0.0)


def map_upper_bound(gt_rank_truncated: np.ndarray, cutoff: int) -> float:
    """Largest full mAP (percent) consistent with top-``cutoff`` lists.

    A ground truth ranked beyond ``cutoff`` contributes at most ``min(1, |G_q| / (cutoff+1))``
    to q's AP sum (its precision is at most |G_q| / rank), so
    AP_q <= AP@K_q + (#not found / |G_q|) * min(1, |G_q| / (K+1)).
    """
    n_gt = (gt_rank_truncated >= 0).sum(axis=1)
    missing = (gt_rank_truncated == 0).sum(axis=1)
    extra = np.where(n_gt > 0, missing / np.maximum(n_gt, 1) * np.minimum(1.0, n_gt / (cutoff + 1)), 0.0)
    return float(100.0 * (average_precision(gt_rank_truncated, cutoff) + extra).mean()) if len(n_gt) else 0.0


def recall_curve(gt_rank: Any, max_k: int) -> np.ndarray:
    """R@k in percent for k = 1..max_k (one pass over the best rank per query)."""
    arr = as_rank_array(gt_rank)
    best = np.where(arr >= 1, arr, np.iinfo(np.int64).max).min(axis=1) if arr.shape[1] else np.full(len(arr), np.iinfo(np.int64).max)
    counts = np.bincount(best[best <= max_k], minlength=max_k + 1)[1:]
    return 100.0 * np.cumsum(counts) / max(len(arr), 1)


def per_query_values(gt_rank: np.ndarray, ks: Sequence[int], map_cutoff: Optional[int] = None,
                     full_map: bool = True) -> dict[str, np.ndarray]:
    """Per-query metric values (percent scale): ``R{k}``, ``mAP`` and/or ``mAP@{K}``."""
    vals = {f"R{k}": 100.0 * hits_at(gt_rank, k) for k in ks}
    if full_map:
        vals["mAP"] = 100.0 * average_precision(gt_rank)
    if map_cutoff is not None:
        vals[f"mAP@{map_cutoff}"] = 100.0 * average_precision(gt_rank, map_cutoff)
    return vals


def bootstrap_ci(values: Mapping[str, np.ndarray], resamples: int, seed: int,
                 confidence: float = 0.95, chunk: int = 128) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the mean of each per-query vector (same draws)."""
    names = list(values)
    if not names:
        return {}
    mat = np.stack([np.asarray(values[n], dtype=np.float64) for n in names], axis=1)  # [N, M]
    n = mat.shape[0]
    if n == 0 or resamples <= 0:
        return {name: (float("nan"), float("nan")) for name in names}
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.empty((resamples, len(names)))
    for b0 in range(0, resamples, chunk):
        b = min(chunk, resamples - b0)
        idx = rng.integers(0, n, size=(b, n), dtype=np.int64 if n > 2**31 - 1 else np.int32)
        counts = np.empty((b, n))
        for row in range(b):  # how often each query is drawn in resample b0 + row
            counts[row] = np.bincount(idx[row], minlength=n)
        means[b0 : b0 + b] = counts @ mat / n
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(names)}


def summarize(values: Mapping[str, np.ndarray], resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """``{metric: {"value": mean, "ci95": [lo, hi] | None}}`` for per-query vectors."""
    cis = bootstrap_ci(values, resamples, seed) if resamples > 0 else {}
    out = {}
    for name, v in values.items():
        mean = float(np.mean(v)) if len(v) else 0.0
        ci = cis.get(name)
        out[name] = {"value": mean, "ci95": [ci[0], ci[1]] if ci and len(v) else None}
    return out


def compute_metrics(
    gt_rank: Any,
    *,
    ks: Sequence[int] = (1, 3, 5, 10),
    map_cutoff: Optional[int] = None,
    full_map: bool = True,
    attributes: Optional[Sequence[Mapping[str, Any]]] = None,
    bootstrap: int = 1000,
    seed: int = 0,
    breakdown_ci: bool = True,
) -> dict[str, Any]:
    """All metrics of one evaluation, as a JSON-ready dict (the submission's ``metrics``).

    ``attributes`` (one mapping per query, e.g. ``Query.attributes``) yields
    ``breakdowns[attr][value] = {"n": count, <metric>: {...}}``; queries lacking an attribute
    fall in the ``"unknown"`` bucket, so every breakdown covers all queries.
    """
    arr = as_rank_array(gt_rank)
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if attributes is not None and len(attributes) != len(arr):
        raise ValueError(f"attributes given for {len(attributes)} queries, gt_rank has {len(arr)}")
    values = per_query_values(arr, ks, map_cutoff, full_map)
    result: dict[str, Any] = {
        "num_queries": int(len(arr)),
        "ks": list(ks),
        "map_cutoff": map_cutoff,
        "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "confidence": 0.95, "method": "percentile"},
        "overall": summarize(values, bootstrap, seed),
        "breakdowns": {},
    }
    if attributes is not None:
        for attr, buckets in sorted(group_by_attribute(attributes).items()):
            result["breakdowns"][attr] = {}
            for value, idx in sorted(buckets.items()):
                sub = {name: v[idx] for name, v in values.items()}
                entry: dict[str, Any] = {"n": int(len(idx))}
                entry.update(summarize(sub, bootstrap if breakdown_ci else 0, seed))
                result["breakdowns"][attr][value] = entry
    return result


def group_by_attribute(attributes: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """``{attr: {value: query indices}}``; a query without ``attr`` goes to ``"unknown"``."""
    keys = sorted({str(k) for a in attributes for k in a})
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        buckets: dict[str, list[int]] = defaultdict(list)
        for i, a in enumerate(attributes):
            v = a.get(key)
            buckets[UNKNOWN if v is None or v == "" else str(v)].append(i)
        out[key] = {v: np.asarray(ix, dtype=np.int64) for v, ix in buckets.items()}
    return out


def ranks_from_lists(ranked: Sequence[Sequence[Any]], gts: Sequence[Iterable[Any]]) -> np.ndarray:
    """``gt_rank`` [Nq, G] from ranked id lists: a ground truth's position in its query's
    list (1-based) or 0 if absent (not retrieved within the list); -1 padding.

    Ids may be of any hashable type. Duplicate ground truths count once.
    """
    if len(ranked) != len(gts):
        raise ValueError(f"{len(ranked)} ranked lists for {len(gts)} queries")
    gt_lists = [list(dict.fromkeys(g)) for g in gts]
    width = max((len(g) for g in gt_lists), default=0)
    out = np.full((len(gt_lists), max(width, 1)), -1, dtype=np.int64)
    for i, (lst, g) in enumerate(zip(ranked, gt_lists)):
        pos: dict[Any, int] = {}
        for p, item in enumerate(lst):
            pos.setdefault(item, p + 1)
        for j, item in enumerate(g):
            out[i, j] = pos.get(item, 0)
    return out


def metric_names(metrics: Mapping[str, Any]) -> list[str]:
    """The metric names of a ``compute_metrics`` result, in display order."""
    return list(metrics.get("overall", {}))
