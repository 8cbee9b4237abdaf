"""Paired significance between leaderboard rows scored on the same queries.

Rows of one table rank the same test queries, so their difference is judged per query, not
by overlapping per-row intervals (which ignore the pairing and are far too conservative).
For two rows A and B with per-query values a_q, b_q (hit@1 as 0/100, AP@K in percent) and
d_q = a_q - b_q:

* difference: mean(d) = A's metric minus B's, in percentage points;
* p-value: two-sided paired randomization test (sign flip, as Fisher's randomization test
  in ranx): under "no difference" each d_q is as likely to be -d_q, so each of ``resamples``
  draws flips the signs of d with independent fair coins,
  ``numpy.random.Generator(PCG64(seed)).integers(0, 2, size=(resamples, n))``, and
  p = (1 + #{|mean(flipped d)| >= |mean(d)|}) / (1 + resamples) (the Monte-Carlo p-value
  that never reports 0);
* 95% interval: paired percentile bootstrap of mean(d), the queries resampled as the tables'
  own CIs are (:func:`benchmark.evaluation.metrics.bootstrap_sums`, same seed and resamples).

Defaults: 10,000 resamples, seed 0, alpha 0.05, no correction for multiple comparisons (each
row is compared with its neighbour, as ranx's tables do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from benchmark.evaluation.metrics import _percentiles, bootstrap_sums

RESAMPLES = 10_000
SEED = 0
ALPHA = 0.05
METRICS = ("R1", "mAP")  # per-query hit@1 and AP@K (Row.per_query)
METHOD = (f"two-sided paired randomization (sign-flip) test, {RESAMPLES:,} resamples, seed {SEED}; "
          f"95% interval: paired percentile bootstrap, {RESAMPLES:,} resamples, seed {SEED}; alpha {ALPHA}")


@dataclass(frozen=True)
class PairedResult:
    """A minus B on one metric: difference, its 95% interval and the randomization p-value."""

    metric: str
    a: str
    b: str
    diff: float
    ci: tuple[float, float]
    p_value: float
    n: int
    resamples: int
    seed: int

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "diff": self.diff, "ci": list(self.ci),
                "p": self.p_value, "n": self.n, "significant": self.significant}

    def describe(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (f"{self.metric}: {self.a} - {self.b} = {self.diff:+.2f} points, 95% CI [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}], "
                f"p = {fmt_p(self.p_value)} ({verdict} at {ALPHA}; {self.n} paired queries)")


def sign_flip_p_values(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, chunk: int = 1 << 22) -> np.ndarray:
    """Two-sided Monte-Carlo p-values of the column means of ``diffs`` [n, C] under random sign
    flips (module docstring); the columns share the draws."""
    d = np.asarray(diffs, dtype=np.float64)
    n, cols = d.shape
    if n == 0:
        return np.ones(cols)
    total = d.sum(axis=0)
    observed = np.abs(total)
    tol = 1e-9 * np.maximum(1.0, np.abs(d).sum(axis=0))  # equal sums count as "as extreme"
    rng = np.random.Generator(np.random.PCG64(seed))
    step = max(1, min(resamples, chunk // n))
    extreme = np.zeros(cols, dtype=np.int64)
    for b0 in range(0, resamples, step):
        b = min(step, resamples - b0)
        keep = rng.integers(0, 2, size=(b, n), dtype=np.int8).astype(np.float64)  # 1 keeps d_q, 0 flips it
        flipped = 2.0 * (keep @ d) - total
        extreme += (np.abs(flipped) >= observed - tol).sum(axis=0)
    return (1 + extreme) / (1 + resamples)


def paired_tests(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], *, names: tuple[str, str] = ("A", "B"),
                 resamples: int = RESAMPLES, seed: int = SEED, confidence: float = 0.95) -> dict[str, PairedResult]:
    """Compare per-query values ``a[m]`` and ``b[m]`` (same queries, same order) for each metric m;
    all metrics share the sign flips and the bootstrap draws."""
    metrics = list(a)
    cols = []
    for m in metrics:
        a_arr, b_arr = np.asarray(a[m], dtype=np.float64), np.asarray(b[m], dtype=np.float64)
        if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
            raise ValueError(f"paired test needs two per-query vectors of one length, got {a_arr.shape} and {b_arr.shape} ({m})")
        cols.append(a_arr - b_arr)
    if not metrics:
        return {}
    d = np.stack(cols, axis=1)
    n = d.shape[0]
    if n == 0:
        return {m: PairedResult(m, names[0], names[1], 0.0, (0.0, 0.0), 1.0, 0, resamples, seed) for m in metrics}
    lo, hi = _percentiles(bootstrap_sums(d, resamples, seed) / n, confidence)
    p = sign_flip_p_values(d, resamples, seed)
    return {m: PairedResult(metric=m, a=names[0], b=names[1], diff=float(d[:, j].mean()), ci=(float(lo[j]), float(hi[j])),
                            p_value=float(p[j]), n=n, resamples=resamples, seed=seed) for j, m in enumerate(metrics)}


def paired_test(a: Sequence[float], b: Sequence[float], *, metric: str = "R1", names: tuple[str, str] = ("A", "B"),
                resamples: int = RESAMPLES, seed: int = SEED, confidence: float = 0.95) -> PairedResult:
    """Compare per-query values ``a`` and ``b`` of one metric (same queries, same order)."""
    return paired_tests({metric: a}, {metric: b}, names=names, resamples=resamples, seed=seed, confidence=confidence)[metric]


def comparable(a: Any, b: Any, metric: str) -> bool:
    """Two rows can be paired on ``metric``: both re-scored, on the same split, same queries."""
    va, vb = a.per_query.get(metric), b.per_query.get(metric)
    return (va is not None and vb is not None and a.split == b.split and bool(a.split)
            and len(va) == len(vb) and a.map_label == b.map_label)


def compare_rows(a: Any, b: Any, metrics: Sequence[str] = METRICS, names: Optional[tuple[str, str]] = None,
                 resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, PairedResult]:
    """Paired results of two leaderboard rows (``Row``) per metric; metrics they cannot be paired on are left out."""
    ok = [m for m in metrics if comparable(a, b, m)]
    return paired_tests({m: a.per_query[m] for m in ok}, {m: b.per_query[m] for m in ok},
                        names=names or (a.label, b.label), resamples=resamples, seed=seed)


def adjacent(rows: Sequence[Any], metrics: Sequence[str] = METRICS) -> list[dict[str, PairedResult]]:
    """For each row, its comparison with the row just below it (``{}`` for the last, or unpairable)."""
    return [compare_rows(r, rows[i + 1], metrics) if i + 1 < len(rows) else {} for i, r in enumerate(rows)]


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
