"""A leaderboard of methods: one configuration's training seeds pooled into one row, and the main
row of each method.

* :func:`pool_seeds`: the rows of one table that differ only in their training seed (same
  method, variant, stage, starting point, split and status) become one row whose values are the
  means over the seeds, whose R1 and mAP@K intervals come from a two-level bootstrap over seeds,
  then queries (:func:`benchmark.evaluation.significance.seed_query_interval`), and whose
  ``runs`` hold the per-seed rows (shown in the run details). A row of one seed is left as it is
  (its interval is over queries only, and the tables say "1 seed"). Two runs at the same seed
  (e.g. reruns at another commit) are never pooled as if they were seeds.
* :func:`mark_main`: per method, the row of its declared main configuration
  (``Method.MAIN_VARIANT`` / ``MAIN_RERANK``, :meth:`methods.base.Method.main_config`) is marked
  ``main``: the one row the ranked table lists for it. Its other trained rows (ablations,
  variants, second stages, recipe changes, zero-shot starts) go to the method's own table.

Rows are duck-typed ``benchmark.reports.leaderboard.Row`` objects.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from benchmark.core.registry import METHODS, RegistryError, load_builtin_methods
from benchmark.evaluation.significance import seed_query_interval
from benchmark.reports.leaderboard_tables import flags, seeds_of

DEFAULT_MAIN = {"variants": ("",), "rerank": "none"}
INTERVAL_RESAMPLES = 1000  # as the submissions' own query intervals (EvalConfig.bootstrap)


def _group_key(row: Any) -> tuple:
    return (
        row.label,
        row.status,
        row.split,
        row.start,
        row.rerank,
        row.analysis,
        getattr(row, "partial", False),
        row.map_label,
    )


def pool_seeds(rows: Sequence[Any]) -> list[Any]:
    """``rows`` with each configuration's seeds pooled into one row (module docstring); reported
    rows and rows of one seed unchanged. Order: the first member's place."""
    groups: dict[tuple, list[Any]] = {}
    order: list[tuple] = []
    for r in rows:
        if r.source != "reproduced" or r.seed is None:
            key: tuple = ("single", id(r))
        else:
            base = _group_key(r)
            taken = sum(1 for k in order if k[:2] == ("seeds", base) and any(m.seed == r.seed for m in groups[k]))
            key = ("seeds", base, taken)  # a second run at a seed already present starts a group of its own
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    return [groups[k][0] if len(groups[k]) == 1 else merge(groups[k]) for k in order]


def merge(members: Sequence[Any]) -> Any:
    """One row standing for ``members`` (one configuration at several training seeds)."""
    runs = sorted(members, key=lambda r: r.seed)
    first = runs[0]
    names = [n for n in first.values if all(n in r.values for r in runs)]
    values = {n: float(np.mean([r.values[n] for r in runs])) for n in names}
    per_query: dict[str, Any] = {}
    cis: dict[str, Optional[tuple[float, float]]] = {n: None for n in names}
    for m in ("R1", "mAP"):
        vecs = [r.per_query.get(m) if r.per_query else None for r in runs]
        if all(v is not None for v in vecs) and len({len(v) for v in vecs}) == 1 and m in values:
            stack = np.asarray(vecs, dtype=np.float64)
            per_query[m] = stack.mean(axis=0)
            cis[m] = seed_query_interval(stack, INTERVAL_RESAMPLES)
    curves = [r.curve for r in runs if r.curve]
    curve = list(np.mean([c[: min(map(len, curves))] for c in curves], axis=0)) if len(curves) == len(runs) else None
    trained = [r.train_s for r in runs if r.train_s is not None]
    dirty = [r.dirty for r in runs]
    notes = list(dict.fromkeys(r.note for r in runs if r.note))
    return dataclasses.replace(
        first,
        values=values,
        cis=cis,
        per_query=per_query,
        curve=curve,
        seed=None,
        runs=list(runs),
        train_s=float(np.mean(trained)) if len(trained) == len(runs) else None,
        breakdowns={},
        date=max(r.date for r in runs),
        note="; ".join(notes),
        dirty=True if any(d is True for d in dirty) else (False if all(d is False for d in dirty) else None),
        duplicates=[d for r in runs for d in r.duplicates],
        control={},
        queries_per_s=None,
    )


def registry_main(method: str) -> Mapping[str, Any]:
    """The declared main configuration of a registered method (:meth:`methods.base.Method.main_config`);
    the default (unlabelled variant, first stage) for one this checkout does not register."""
    load_builtin_methods()
    try:
        cls = METHODS.get(method)
    except RegistryError:
        return DEFAULT_MAIN
    return cls.main_config()


def mark_main(rows: Sequence[Any], main_of: Callable[[str], Mapping[str, Any]] = registry_main) -> None:
    """Set ``row.main`` on each method's main row (module docstring); at most one per method."""
    by_method: dict[str, list[Any]] = {}
    for r in rows:
        r.main = False
        # an external row (outputs, or weights evaluated untrained, from outside the harness) can be its method's
        # main row too; a row the harness trained is preferred to one from outside weights
        if r.source in ("reproduced", "external") and not flags(r) and r.start in (None, "external-weights"):
            by_method.setdefault(r.method, []).append(r)
    for method, candidates in by_method.items():
        cfg = main_of(method)
        variants = tuple(cfg.get("variants") or ("",))
        rerank = None if cfg.get("rerank", "none") == "none" else cfg["rerank"]
        fits = [r for r in candidates if r.variant in variants and r.rerank == rerank]
        if fits:
            best = min(
                fits,
                key=lambda r: (
                    variants.index(r.variant),
                    r.start is not None,
                    r.status != "verified",
                    -len(seeds_of(r)),
                ),
            )
            best.main = True
