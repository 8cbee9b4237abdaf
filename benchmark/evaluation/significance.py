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

Defaults: 10,000 resamples, seed 0, alpha 0.05, no correction for multiple comparisons.

**Training seeds.** One training run is not the method: retraining with another seed moves a
row by more than its query interval (issue 38: clip-meanpool on lpr4m-synth, seeds 0/1/2, R1
31.70 / 31.90 / 27.40, and the sign-flip test above calls seed 2 "different" from seed 0 at
p = 0.008). :func:`seed_aware_tests` therefore compares two rows that each pool one or more
training seeds, following Bouthillier et al., "Accounting for Variance in Machine Learning
Benchmarks" (MLSys 2021): the variance of the difference sums the sources, training seeds and
the test queries,

    se^2 = s_A^2 / m_A + s_B^2 / m_B + var_q(dbar_q) / N,

where s^2 is the sample variance of a row's per-seed metric over its m seeds, and dbar_q the
per-query difference of the two rows' seed-averaged values (queries paired; this term also holds
part of the seed noise, so the sum errs on the conservative side). A row with one seed has no
s^2 of its own: it takes the pooled within-method seed variance of the table's rows that have
several seeds (:func:`pooled_seed_variance`); where no row of the table has several seeds,
nothing can be said about seed variance and the test falls back to the paired sign flip over
queries, marked ``seed_term == "none"`` (the tables say "1 seed"). The p-value and the 95%
interval come from Student's t with Welch-Satterthwaite degrees of freedom (with 3 seeds a side
a bootstrap over seeds, as rliable's stratified bootstrap, would resample 3 values and
understate the spread). ``tests/test_significance.py`` checks by simulation that two copies of
one method differing only in seed are called different in about 5% of trials, where the
query-only test calls them different far more often.

:func:`seed_query_interval` is a row's own 95% interval over seeds and queries: a two-level
bootstrap that resamples the seeds, then the queries (shared by the chosen seeds).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

from benchmark.evaluation.metrics import _percentiles, bootstrap_sums

RESAMPLES = 10_000
SEED = 0
ALPHA = 0.05
METRICS = ("R1", "mAP")  # per-query hit@1 and AP@K (Row.per_query)
QUERY_METHOD = (
    f"two-sided paired randomization (sign-flip) test, {RESAMPLES:,} resamples, seed {SEED}; "
    f"95% interval: paired percentile bootstrap, {RESAMPLES:,} resamples, seed {SEED}; alpha {ALPHA}"
)
METHOD = (
    "seed-aware: Welch t on the difference of seed means, its variance summing each row's seed variance "
    "(own, or pooled over the table's multi-seed rows) and the paired query variance (Bouthillier et al., "
    f"MLSys 2021), alpha {ALPHA}; with no seed variance known (every row 1 seed): {QUERY_METHOD}"
)


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
    seeds: tuple[int, int] = (1, 1)  # training seeds pooled in A and in B
    seed_term: str = "none"  # where the seed variance came from: "own" / "pooled" (see the docstring) or "none"

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "a": self.a,
            "b": self.b,
            "diff": self.diff,
            "ci": list(self.ci),
            "p": self.p_value,
            "n": self.n,
            "significant": self.significant,
            "seeds": list(self.seeds),
            "seed_term": self.seed_term,
        }

    def describe(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        seeds = f"{self.seeds[0]} vs {self.seeds[1]} seed(s), " + (
            "queries only: seed variance unknown" if self.seed_term == "none" else f"seed variance {self.seed_term}"
        )
        return (
            f"{self.metric}: {self.a} - {self.b} = {self.diff:+.2f} points, 95% CI [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}], "
            f"p = {fmt_p(self.p_value)} ({verdict} at {ALPHA}; {self.n} paired queries, {seeds})"
        )


def sign_flip_p_values(
    diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, chunk: int = 1 << 22
) -> np.ndarray:
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


def paired_tests(
    a: Mapping[str, Sequence[float]],
    b: Mapping[str, Sequence[float]],
    *,
    names: tuple[str, str] = ("A", "B"),
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = 0.95,
) -> dict[str, PairedResult]:
    """Compare per-query values ``a[m]`` and ``b[m]`` (same queries, same order) for each metric m;
    all metrics share the sign flips and the bootstrap draws."""
    metrics = list(a)
    cols = []
    for m in metrics:
        a_arr, b_arr = np.asarray(a[m], dtype=np.float64), np.asarray(b[m], dtype=np.float64)
        if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
            raise ValueError(
                f"paired test needs two per-query vectors of one length, got {a_arr.shape} and {b_arr.shape} ({m})"
            )
        cols.append(a_arr - b_arr)
    if not metrics:
        return {}
    d = np.stack(cols, axis=1)
    n = d.shape[0]
    if n == 0:
        return {m: PairedResult(m, names[0], names[1], 0.0, (0.0, 0.0), 1.0, 0, resamples, seed) for m in metrics}
    lo, hi = _percentiles(bootstrap_sums(d, resamples, seed) / n, confidence)
    p = sign_flip_p_values(d, resamples, seed)
    return {
        m: PairedResult(
            metric=m,
            a=names[0],
            b=names[1],
            diff=float(d[:, j].mean()),
            ci=(float(lo[j]), float(hi[j])),
            p_value=float(p[j]),
            n=n,
            resamples=resamples,
            seed=seed,
        )
        for j, m in enumerate(metrics)
    }


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric: str = "R1",
    names: tuple[str, str] = ("A", "B"),
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = 0.95,
) -> PairedResult:
    """Compare per-query values ``a`` and ``b`` of one metric (same queries, same order)."""
    return paired_tests({metric: a}, {metric: b}, names=names, resamples=resamples, seed=seed, confidence=confidence)[
        metric
    ]


# --- training seeds ----------------------------------------------------------------------------


def _seed_variance(x: np.ndarray) -> Optional[tuple[float, int]]:
    """(sample variance of the per-seed means, degrees of freedom) of [m, N]; None with one seed."""
    m = x.shape[0]
    return (float(np.var(x.mean(axis=1), ddof=1)), m - 1) if m >= 2 else None


def pooled_seed_variance(groups: Sequence[Any]) -> Optional[tuple[float, int]]:
    """The within-method seed variance pooled over ``groups`` (each [m, N] per-seed per-query
    values of one row; those with one seed add nothing): (variance, degrees of freedom), or None."""
    parts = [v for v in (_seed_variance(np.atleast_2d(np.asarray(g, dtype=np.float64))) for g in groups) if v]
    df = sum(d for _, d in parts)
    return (sum(v * d for v, d in parts) / df, df) if df else None


def seed_aware_tests(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    pool: Optional[Mapping[str, tuple[float, int]]] = None,
    names: tuple[str, str] = ("A", "B"),
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = 0.95,
) -> dict[str, PairedResult]:
    """Compare two rows given per metric as [m, N] per-seed per-query values (a [N] vector is one
    seed; the same N queries in the same order on both sides); see the module docstring. ``pool``:
    per metric the pooled seed variance of the table (:func:`pooled_seed_variance`), used by a side
    with one seed; without it the two sides pool their own."""
    out: dict[str, PairedResult] = {}
    queries_only: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in a:
        xa, xb = (np.atleast_2d(np.asarray(v[m], dtype=np.float64)) for v in (a, b))
        if xa.shape[1] != xb.shape[1] or xa.ndim != 2:
            raise ValueError(
                f"seed-aware test needs per-query values of one length, got {xa.shape} and {xb.shape} ({m})"
            )
        own = [_seed_variance(xa), _seed_variance(xb)]
        shared = (pool or {}).get(m) or pooled_seed_variance([xa, xb])
        if shared is None:  # every side one seed, nothing pooled: queries only
            queries_only[m] = (xa, xb)
            continue
        out[m] = _welch(
            m, xa, xb, [v or shared for v in own], "own" if all(own) else "pooled", names, confidence, resamples, seed
        )
    if queries_only:  # the metrics share the sign flips and bootstrap draws, as paired_tests does
        tests = paired_tests(
            {m: x.mean(0) for m, (x, _) in queries_only.items()},
            {m: y.mean(0) for m, (_, y) in queries_only.items()},
            names=names,
            resamples=resamples,
            seed=seed,
            confidence=confidence,
        )
        for m, (x, y) in queries_only.items():
            out[m] = dataclasses.replace(tests[m], seeds=(x.shape[0], y.shape[0]))
    return {m: out[m] for m in a}


def _welch(
    metric: str,
    xa: np.ndarray,
    xb: np.ndarray,
    var: list[tuple[float, int]],
    term: str,
    names: tuple[str, str],
    confidence: float,
    resamples: int,
    seed: int,
) -> PairedResult:
    """Student's t with Welch-Satterthwaite degrees of freedom over the seed and query terms."""
    n = xa.shape[1]
    dbar = xa.mean(0) - xb.mean(0)
    diff = float(dbar.mean())
    terms = [
        (var[0][0] / xa.shape[0], var[0][1]),
        (var[1][0] / xb.shape[0], var[1][1]),
        (float(np.var(dbar, ddof=1)) / n if n > 1 else 0.0, max(n - 1, 1)),
    ]
    se2 = sum(t for t, _ in terms)
    if se2 <= 0:
        p, half = (1.0 if diff == 0 else 0.0), 0.0
    else:
        df = se2**2 / sum(t**2 / d for t, d in terms if t > 0)
        se = se2**0.5
        p = float(2 * stats.t.sf(abs(diff) / se, df))
        half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
    return PairedResult(
        metric=metric,
        a=names[0],
        b=names[1],
        diff=diff,
        ci=(diff - half, diff + half),
        p_value=p,
        n=n,
        resamples=resamples,
        seed=seed,
        seeds=(xa.shape[0], xb.shape[0]),
        seed_term=term,
    )


def seed_query_interval(
    x: Any, resamples: int = 1000, seed: int = SEED, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of [m, N] per-seed per-query values by a two-level bootstrap:
    each draw resamples m of the seeds, then N of the queries (the same queries for every seed)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    m, n = x.shape
    rng = np.random.Generator(np.random.PCG64(seed))
    values = np.empty(resamples)
    step = max(1, (1 << 22) // max(1, m * n))
    for b0 in range(0, resamples, step):
        b = min(step, resamples - b0)
        queries = rng.integers(0, n, size=(b, n))
        chosen = rng.integers(0, m, size=(b, m))
        per_seed = x[:, queries].mean(axis=2)  # [m, b]: every seed on each draw's queries
        values[b0 : b0 + b] = np.take_along_axis(per_seed.T, chosen, axis=1).mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def per_seed_values(row: Any, metric: str) -> Optional[np.ndarray]:
    """[m, N] per-seed per-query values of a leaderboard row (``row.runs``: its seeds; else itself)."""
    runs = getattr(row, "runs", None) or [row]
    vecs = [r.per_query.get(metric) if r.per_query else None for r in runs]
    if any(v is None for v in vecs) or len({len(v) for v in vecs}) != 1:
        return None
    return np.asarray(vecs, dtype=np.float64)


def table_pool(rows: Sequence[Any], metrics: Sequence[str] = METRICS) -> dict[str, tuple[float, int]]:
    """Per metric the seed variance pooled over ``rows`` that have several seeds (trained rows of one table)."""
    out = {}
    for m in metrics:
        pooled = pooled_seed_variance([v for v in (per_seed_values(r, m) for r in rows) if v is not None])
        if pooled is not None:
            out[m] = pooled
    return out


def comparable(a: Any, b: Any, metric: str) -> bool:
    """Two rows can be paired on ``metric``: both re-scored, on the same split, same queries."""
    va, vb = a.per_query.get(metric), b.per_query.get(metric)
    return (
        va is not None
        and vb is not None
        and a.split == b.split
        and bool(a.split)
        and len(va) == len(vb)
        and a.map_label == b.map_label
    )


def compare_rows(
    a: Any,
    b: Any,
    metrics: Sequence[str] = METRICS,
    names: Optional[tuple[str, str]] = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    pool: Optional[Mapping[str, tuple[float, int]]] = None,
    memo: Any = None,
) -> dict[str, PairedResult]:
    """Seed-aware results (:func:`seed_aware_tests`) of two leaderboard rows (``Row``, each
    pooling its seeds) per metric; metrics they cannot be paired on are left out. ``memo``: an
    object with ``get(key)`` / ``put(key, results)`` keeping results by :func:`comparison_key` (the
    leaderboard's cache by content), or None."""
    ok = [m for m in metrics if comparable(a, b, m)]
    va = {m: per_seed_values(a, m) for m in ok}
    vb = {m: per_seed_values(b, m) for m in ok}
    ok = [m for m in ok if va[m] is not None and vb[m] is not None]
    names = names or (a.label, b.label)
    key = (
        comparison_key({m: va[m] for m in ok}, {m: vb[m] for m in ok}, pool, names, resamples, seed)
        if memo is not None
        else ""
    )
    hit = memo.get(key) if memo is not None else None
    if hit is not None:
        return hit
    out = seed_aware_tests(
        {m: va[m] for m in ok}, {m: vb[m] for m in ok}, pool=pool, names=names, resamples=resamples, seed=seed
    )
    if memo is not None:
        memo.put(key, out)
    return out


def comparison_key(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    pool: Optional[Mapping[str, tuple[float, int]]],
    names: tuple[str, str],
    resamples: int,
    seed: int,
) -> str:
    """A digest of everything a comparison's result depends on (values, pool, names, draws, method)."""

    h = hashlib.sha256(repr((METHOD, sorted(a), names, resamples, seed, sorted((pool or {}).items()))).encode())
    for side in (a, b):
        for m in sorted(side):
            h.update(np.ascontiguousarray(side[m], dtype=np.float64).tobytes())
            h.update(repr(side[m].shape).encode())
    return h.hexdigest()


def adjacent(
    rows: Sequence[Any],
    metrics: Sequence[str] = METRICS,
    pool: Optional[Mapping[str, tuple[float, int]]] = None,
    memo: Any = None,
) -> list[dict[str, PairedResult]]:
    """For each row, its comparison with the row just below it (``{}`` for the last, or unpairable)."""
    return [
        compare_rows(r, rows[i + 1], metrics, pool=pool, memo=memo) if i + 1 < len(rows) else {}
        for i, r in enumerate(rows)
    ]


def against(
    rows: Sequence[Any],
    reference: Any,
    metrics: Sequence[str] = METRICS,
    pool: Optional[Mapping[str, tuple[float, int]]] = None,
    memo: Any = None,
) -> list[dict[str, PairedResult]]:
    """Each row compared with ``reference`` (the best method, or a method's main row); ``{}`` for itself."""
    return [{} if r is reference else compare_rows(r, reference, metrics, pool=pool, memo=memo) for r in rows]


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
