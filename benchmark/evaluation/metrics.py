"""Retrieval metrics from ground-truth ranks: R@k, mAP, bootstrap CIs, per-attribute breakdowns.

Everything is computed from one integer array ``gt_rank`` [Nq, G] (see
:mod:`benchmark.evaluation.retrieval`): ``>= 1`` the 1-based rank of a ground truth in the query's
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

Confidence intervals: percentile bootstrap over queries. ``B`` resamples, each ``Nq`` query
indices drawn with replacement, row b of
``numpy.random.Generator(PCG64(seed)).integers(0, Nq, size=(B, Nq), dtype=int64)``; every
metric, overall and per breakdown bucket, is computed on the same resamples (a bucket's
value in a resample is its mean over the drawn queries that belong to it); the interval is
the (2.5, 97.5) percentiles of the resampled values. Given the same ``gt_rank``, seed and B
the intervals are reproducible, which lets a re-scorer verify them.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

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
    best = (
        np.where(arr >= 1, arr, np.iinfo(np.int64).max).min(axis=1)
        if arr.shape[1]
        else np.full(len(arr), np.iinfo(np.int64).max)
    )
    counts = np.bincount(best[best <= max_k], minlength=max_k + 1)[1:]
    return 100.0 * np.cumsum(counts) / max(len(arr), 1)


def per_query_values(
    gt_rank: np.ndarray, ks: Sequence[int], map_cutoff: Optional[int] = None, full_map: bool = True
) -> dict[str, np.ndarray]:
    """Per-query metric values (percent scale): ``R{k}``, ``mAP`` and/or ``mAP@{K}``."""
    vals = {f"R{k}": 100.0 * hits_at(gt_rank, k) for k in ks}
    if full_map:
        vals["mAP"] = 100.0 * average_precision(gt_rank)
    if map_cutoff is not None:
        vals[f"mAP@{map_cutoff}"] = 100.0 * average_precision(gt_rank, map_cutoff)
    return vals


def resample_counts(
    n: int, resamples: int, seed: int, chunk_elements: int = 1 << 22
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(b0, counts)``, ``counts`` [n, b] float: how often each query is drawn in
    resamples b0 .. b0+b-1 (one column per resample; rows of a query subset are contiguous).

    Resample r draws ``n`` query indices with replacement:
    ``numpy.random.Generator(PCG64(seed)).integers(0, n, size=(B, n), dtype=int64)`` (row r),
    generated in chunks of rows (int64 draws do not depend on the chunking).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    step = max(1, min(resamples, chunk_elements // max(n, 1)))
    for b0 in range(0, resamples, step):
        b = min(step, resamples - b0)
        idx = rng.integers(0, n, size=(b, n), dtype=np.int64)
        idx *= b
        idx += np.arange(b, dtype=np.int64)[:, None]
        yield b0, np.bincount(idx.ravel(), minlength=n * b).reshape(n, b).astype(np.float64)


def bootstrap_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[B, C]: for each resample (see :func:`resample_counts`), the column sums over the drawn queries."""
    columns = np.asarray(columns, dtype=np.float64)
    out = np.empty((resamples, columns.shape[1]))
    for b0, counts in resample_counts(columns.shape[0], resamples, seed):
        out[b0 : b0 + counts.shape[1]] = counts.T @ columns
    return out


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():  # a bucket no resample drew gives NaN: no interval
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def bootstrap_ci(
    values: Mapping[str, np.ndarray], resamples: int, seed: int, confidence: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the mean of each per-query vector (same draws)."""
    names = list(values)
    if not names:
        return {}
    mat = np.stack([np.asarray(values[n], dtype=np.float64) for n in names], axis=1)  # [N, M]
    n = mat.shape[0]
    if n == 0 or resamples <= 0:
        return {name: (float("nan"), float("nan")) for name in names}
    lo, hi = _percentiles(bootstrap_sums(mat, resamples, seed) / n, confidence)
    return {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(names)}


def _entry(value: float, ci: Optional[tuple[float, float]]) -> dict[str, Any]:
    ok = ci is not None and np.isfinite(ci[0]) and np.isfinite(ci[1])
    return {"value": float(value), "ci95": [float(ci[0]), float(ci[1])] if ok else None}


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
    fall in the ``"unknown"`` bucket, so every breakdown covers all queries. A bucket's CI
    comes from the same resamples of the whole split as the overall CIs (the bucket's mean
    over the drawn queries that belong to it; resamples that draw none are skipped).
    """
    arr = as_rank_array(gt_rank)
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    n = len(arr)
    if attributes is not None and len(attributes) != n:
        raise ValueError(f"attributes given for {len(attributes)} queries, gt_rank has {n}")
    values = per_query_values(arr, ks, map_cutoff, full_map)
    names = list(values)
    vmat = np.stack([values[name] for name in names], axis=1) if n else np.zeros((0, len(names)))
    groups = group_by_attribute(attributes) if attributes is not None else {}
    buckets = [(attr, value, idx) for attr, bs in sorted(groups.items()) for value, idx in sorted(bs.items())]

    # one set of resamples for everything: overall sums, then per bucket (metric sums, size)
    lo = hi = None
    bucket_ci: list[tuple[np.ndarray, np.ndarray]] = []
    if bootstrap > 0 and n > 0:
        m = len(names)
        overall_sums = np.empty((bootstrap, m))
        use = buckets if breakdown_ci else []
        b_sums = [np.empty((bootstrap, m)) for _ in use]
        b_sizes = [np.empty((bootstrap, 1)) for _ in use]
        for b0, counts in resample_counts(n, bootstrap, seed):
            b1 = b0 + counts.shape[1]
            overall_sums[b0:b1] = counts.T @ vmat
            for i, (_, _, idx) in enumerate(use):
                sub = counts[idx]
                b_sums[i][b0:b1] = sub.T @ vmat[idx]
                b_sizes[i][b0:b1, 0] = sub.sum(0)
        lo, hi = _percentiles(overall_sums / n, 0.95)
        for sums, size in zip(b_sums, b_sizes):
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(size > 0, sums / np.where(size > 0, size, 1.0), np.nan)
            bucket_ci.append(_percentiles(means, 0.95))

    overall = {}
    for j, name in enumerate(names):
        ci = (lo[j], hi[j]) if lo is not None else None
        overall[name] = _entry(vmat[:, j].mean() if n else 0.0, ci)
    breakdowns: dict[str, Any] = {}
    for b, (attr, value, idx) in enumerate(buckets):
        entry: dict[str, Any] = {"n": int(len(idx))}
        for j, name in enumerate(names):
            ci = None
            if lo is not None and breakdown_ci:
                blo, bhi = bucket_ci[b]
                ci = (blo[j], bhi[j])
            entry[name] = _entry(vmat[idx, j].mean() if len(idx) else 0.0, ci)
        breakdowns.setdefault(attr, {})[value] = entry
    return {
        "num_queries": int(n),
        "ks": list(ks),
        "map_cutoff": map_cutoff,
        "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "confidence": 0.95, "method": "percentile"},
        "overall": overall,
        "breakdowns": breakdowns,
    }


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
