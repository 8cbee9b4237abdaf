"""Two protocols of one dataset side by side: each method's main row under the old and the new
protocol (R1 mean over seeds, its interval, seed sd), whether the new row clears its untrained
control, Kendall's tau between the two orders (and, as its yardstick, between two training seeds of
the new protocol), and whether every pair of methods that the old intervals separate keeps its
order (issue 38's criteria for a cheaper protocol).

Rows are the leaderboard's own (:func:`benchmark.reports.leaderboard_rows.collect_rows`, re-scored
from the submissions; seeds pooled and main rows marked by :func:`benchmark.reports.leaderboard.build`).
``--extra DIR`` adds the submissions of another results folder to the old protocol's rows, in
place of a committed row of the same label and seed: e.g. runs of the old protocol on the
dataset's current world, where the committed ones were made on an earlier world.

    python tools/compare_protocols.py --dataset lpr4m-synth --old tiny --new tiny-v2
"""

from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy.stats import kendalltau  # noqa: E402

from benchmark.reports.leaderboard import build  # noqa: E402
from benchmark.reports.leaderboard_loader import registry_loader  # noqa: E402
from benchmark.reports.leaderboard_rows import Row, collect_rows  # noqa: E402


def load_rows(results_dir: Path, dataset: str, profiles: tuple[str, ...], extra: list[Path]) -> list[Row]:
    load = registry_loader()

    def keep(sub: Any) -> bool:
        return sub["dataset"]["name"] == dataset and sub["profile"]["name"] in profiles

    rows = collect_rows(results_dir, load, skipped=[], keep=keep)
    for folder in extra:
        added = collect_rows(folder, load, skipped=[], keep=keep)
        taken = {(r.label, r.profile, r.seed, r.start) for r in added}
        rows = [r for r in rows if (r.label, r.profile, r.seed, r.start) not in taken] + added
    return rows


def main_rows(rows: list[Row], profile: str) -> dict[str, Row]:
    board = build([r for r in rows if r.profile == profile])
    return {r.method: r for table in board.tables.values() for r in table if r.main}


def _sd(row: Row) -> Optional[float]:
    values = [m.values["R1"] for m in row.runs]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _fmt(row: Optional[Row]) -> str:
    if row is None:
        return "-"
    lo, hi = row.cis.get("R1") or (float("nan"), float("nan"))
    return f"{row.values['R1']:.2f} [{lo:.2f}, {hi:.2f}]"


def report(old: dict[str, Row], new: dict[str, Row], old_name: str, new_name: str) -> str:
    lines = [
        f"| method | {old_name} R1 | {new_name} R1 | seeds | seed sd | untrained control | clears it |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in sorted(set(old) | set(new), key=lambda m: -(new[m].values["R1"] if m in new else -1)):
        n = new.get(method)
        seeds = len(n.runs) if n is not None and n.runs else (1 if n is not None else 0)
        sd = _sd(n) if n is not None else None
        control = n.control.get("R1") if n is not None else None
        ci = n.cis.get("R1") if n is not None else None
        clears = "-" if ci is None or control is None else ("yes" if ci[0] > control else "**no**")
        lines.append(
            f"| {method} | {_fmt(old.get(method))} | {_fmt(n)} | {seeds} | {'-' if sd is None else f'{sd:.2f}'} | "
            f"{'-' if control is None else f'{control:.2f}'} | {clears} |"
        )
    both = sorted(set(old) & set(new))
    if len(both) >= 2:
        tau = kendalltau([old[m].values["R1"] for m in both], [new[m].values["R1"] for m in both])
        lines.append(
            f"\nKendall's tau over the {len(both)} methods in both: {tau.statistic:.3f} (p = {tau.pvalue:.3g})"
        )
        separated, reversed_pairs = 0, []
        for a, b in combinations(both, 2):
            if _apart(old[a], old[b]):
                separated += 1
                same = (old[a].values["R1"] > old[b].values["R1"]) == (new[a].values["R1"] > new[b].values["R1"])
                if not same:
                    reversed_pairs.append(f"{a} / {b}" + (" (separated in both)" if _apart(new[a], new[b]) else ""))
        lines.append(
            f"Pairs the {old_name} intervals separate: {separated}; order reversed in {new_name}: "
            + (", ".join(reversed_pairs) if reversed_pairs else "none")
        )
    floor = seed_taus(new)
    if floor:
        lines.append(
            f"Kendall's tau between two seeds of {new_name} (the order's own seed noise): "
            + ", ".join(f"seeds {a}/{b} {t:.3f} over {n}" for (a, b), (t, n) in floor.items())
        )
    return "\n".join(lines)


def _apart(a: Row, b: Row) -> bool:
    """Whether the R1 intervals of two rows do not overlap (False when one is unknown)."""
    if not (a.cis.get("R1") and b.cis.get("R1")):
        return False
    (alo, ahi), (blo, bhi) = a.cis["R1"], b.cis["R1"]
    return ahi < blo or bhi < alo


def seed_taus(rows: dict[str, Row]) -> dict[tuple[int, int], tuple[float, int]]:
    """Kendall's tau between the orders of methods that two training seeds of one protocol give
    (over the methods run at both seeds): how far the order moves when only the seed changes, the
    yardstick for a tau between two protocols."""
    by_seed: dict[int, dict[str, float]] = {}
    for method, row in rows.items():
        for run in row.runs:
            if run.seed is not None:
                by_seed.setdefault(run.seed, {})[method] = run.values["R1"]
    out = {}
    for a, b in combinations(sorted(by_seed), 2):
        both = sorted(set(by_seed[a]) & set(by_seed[b]))
        if len(both) >= 2:
            tau = kendalltau([by_seed[a][m] for m in both], [by_seed[b][m] for m in both]).statistic
            out[(a, b)] = (float(tau), len(both))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--old", default="tiny")
    ap.add_argument("--new", default="tiny-v2")
    ap.add_argument("--results-dir", type=Path, default=REPO / "results")
    ap.add_argument("--extra", type=Path, nargs="*", default=[])
    a = ap.parse_args(argv)
    rows = load_rows(a.results_dir, a.dataset, (a.old, a.new), a.extra)
    print(report(main_rows(rows, a.old), main_rows(rows, a.new), a.old, a.new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
