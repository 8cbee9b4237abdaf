"""Tables printed in the terminal (rich): one run's metrics, and a narrow leaderboard table.

The leaderboard table fits an 80-column terminal: rank, method (wrapped, never cut), R1 with
its 95% CI, R10 and mAP@K of the ranked rows, then one line on what else the full tables
(``results/leaderboard.md``, ``results/site/index.html``) hold.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from benchmark.reports.leaderboard_tables import DASH, MARK, fmt_value, labels, map_header, split_rows


def print_run_table(metrics: Mapping[str, Any], console: Any = None, *, title: str = "Evaluation") -> None:
    """Print one run's metrics (CIs, then each breakdown) as rich tables."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    ov = metrics["overall"]
    t = Table(title=f"{title} ({metrics['num_queries']} queries)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("95% CI", justify="right")
    for name, e in ov.items():
        ci = e.get("ci95")
        t.add_row(name, f"{e['value']:.2f}", f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else DASH)
    con.print(t)
    names = [n for n in ov if n.startswith("R") or n == "mAP"]
    for attr, buckets in metrics.get("breakdowns", {}).items():
        bt = Table(title=f"by {attr}")
        bt.add_column(attr)
        bt.add_column("n", justify="right")
        for n in names:
            bt.add_column(n, justify="right")
        for value, b in buckets.items():
            bt.add_row(value, str(b["n"]), *(f"{b[n]['value']:.2f}" if n in b else DASH for n in names))
        con.print(bt)


def rich_tables(board: Any, only: Optional[tuple[str, str]] = None) -> list[Any]:
    """Narrow rich tables of the ranked rows (or of the one table ``only`` = (dataset, profile))."""
    from rich.table import Table

    out = []
    for key, rows in board.tables.items():
        if only is not None and key != only:
            continue
        ranked, analysis, reported = split_rows(rows)
        names = labels(rows)
        pairs = getattr(board, "pairs", {}).get(key, [])
        extra = [f"{len(x)} {what}" for x, what in ((analysis, "analysis"), (reported, "reported")) if x]
        caption = (f"{MARK}: not significantly different from the next row (paired test). "
                   + (f"Not shown: {', '.join(extra)} rows; " if extra else "") + "all in results/leaderboard.md")
        table = Table(title=f"{key[0]} - profile {key[1]}: ranked", title_justify="left", caption=caption,
                      caption_justify="left")
        table.add_column("#", justify="right")
        table.add_column("Method", overflow="fold", ratio=1)
        for name in ("R1 [95% CI]", "R10", map_header(ranked)):
            table.add_column(name, justify="right", no_wrap=True)
        for i, r in enumerate(ranked):
            test = pairs[i] if i < len(pairs) else {}
            mark = lambda m: MARK if m in test and not test[m].significant else ""  # noqa: E731
            table.add_row(str(i + 1), names[id(r)], fmt_value(r, "R1") + mark("R1"), fmt_value(r, "R10", with_ci=False),
                          fmt_value(r, "mAP", with_ci=False) + mark("mAP"))
        out.append(table)
    return out


def find_row(board: Any, spec: str) -> tuple[tuple[str, str], Any]:
    """The one row whose submission file (path or name, with or without .json[.gz]) or label is ``spec``."""
    from benchmark.record.submission import SubmissionError

    want = spec.split("/")[-1]
    hits = []
    for key, rows in board.tables.items():
        names = labels(rows)
        for r in rows:
            stem = r.path.split("/")[-1] if r.path else ""
            if spec in (names[id(r)], r.label) or (stem and want in (stem, stem.split(".json")[0])):
                hits.append((key, r))
    if len(hits) != 1:
        raise SubmissionError(f"--compare {spec!r}: {'no' if not hits else len(hits)} rows match "
                              "(give a submission file name or an exact row label)")
    return hits[0]


def compare_lines(board: Any, a: str, b: str) -> list[str]:
    """The paired test of two rows of one table, one line per metric (see benchmark.evaluation.significance)."""
    from benchmark.evaluation.significance import METHOD, compare_rows
    from benchmark.record.submission import SubmissionError

    (ka, ra), (kb, rb) = find_row(board, a), find_row(board, b)
    if ka != kb:
        raise SubmissionError(f"--compare: {a!r} and {b!r} are in different tables ({ka} vs {kb})")
    tests = compare_rows(ra, rb)
    if not tests:
        raise SubmissionError(f"--compare: {a!r} and {b!r} cannot be paired (both must be re-scored on the same split)")
    return [f"paired test, {ka[0]} ({ka[1]}): {METHOD}"] + [t.describe() for t in tests.values()]
