"""The leaderboard's seed-aware comparisons kept by content, beside the re-scoring cache.

A comparison's result depends only on the two rows' per-seed per-query values, the pooled seed
variance, the row names, the draws and the test itself
(:func:`benchmark.evaluation.significance.comparison_key` hashes them all), so a regeneration whose
submissions did not change reads every comparison back instead of redrawing 10,000 sign flips per
pair. Entries live at ``<LPR_BENCH_CACHE or .cache>/comparisons/<key>.json`` and are verified on
read like the re-scoring cache's (:func:`benchmark.record.rescore_cache.read_entry`).
"""

from __future__ import annotations

from typing import Optional

from benchmark.evaluation.significance import PairedResult
from benchmark.record.rescore_cache import cache_root, read_entry, write_entry

SUBDIR = "comparisons"


class ComparisonCache:
    """``get(key)`` / ``put(key, results)`` for :func:`benchmark.evaluation.significance.compare_rows`."""

    def __init__(self) -> None:
        self.folder = cache_root() / SUBDIR
        self.hits = 0

    def get(self, key: str) -> Optional[dict[str, PairedResult]]:
        payload = read_entry(self.folder / f"{key}.json", key)
        if payload is None:
            return None
        try:
            out = {
                m: PairedResult(**{**d, "ci": tuple(d["ci"]), "seeds": tuple(d["seeds"])})
                for m, d in payload["tests"].items()
            }
        except (TypeError, KeyError):  # an entry of another layout: recompute
            return None
        self.hits += 1
        return out

    def put(self, key: str, results: dict[str, PairedResult]) -> None:
        tests = {}
        for m, t in results.items():
            tests[m] = {
                "metric": t.metric,
                "a": t.a,
                "b": t.b,
                "diff": t.diff,
                "ci": list(t.ci),
                "p_value": t.p_value,
                "n": t.n,
                "resamples": t.resamples,
                "seed": t.seed,
                "seeds": list(t.seeds),
                "seed_term": t.seed_term,
            }
        write_entry(self.folder / f"{key}.json", key, {"tests": tests})
