"""Tables printed in the terminal (rich): one run's metrics, and a narrow leaderboard table.

The leaderboard table fits an 80-column terminal: rank, method (wrapped, never cut), R1 with
its 95% CI, R10 and mAP@K of the ranked rows, then one line on what else the full tables
(``results/leaderboard.md``, ``results/site/index.html``) hold.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from rich.console import Console
from rich.table import Table

from benchmark.evaluation.significance import METHOD, compare_rows, table_pool
from benchmark.record.submission import SubmissionError
from benchmark.reports.leaderboard_tables import (
    DASH,
    MARK,
    fmt_value,
    labels,
    map_header,
    origin_mark,
    seeds_text,
    split_rows,
    variant_groups,
)


def print_run_table(metrics: Mapping[str, Any], console: Any = None, *, title: str = "Evaluation") -> None:
    """Print one run's metrics (CIs, then each breakdown) as rich tables."""

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


def rich_tables(board: Any, only: Optional[tuple[str, str]] = None, where: str = "results/leaderboard.md") -> list[Any]:
    """Narrow rich tables of the ranked rows (or of the one table ``only`` = (dataset, profile)),
    tables with ranked rows first; ``where``: the full tables' file, named in the caption."""

    out = []
    for key, rows in sorted(board.tables.items(), key=lambda kv: not split_rows(kv[1])[0]):
        if only is not None and key != only:
            continue
        ranked, analysis, reported = split_rows(rows)
        names = labels(rows)
        pairs = getattr(board, "pairs", {}).get(key, [])
        variants = sum(len(v) for v in variant_groups(rows).values())
        extra = [
            f"{len(x) if isinstance(x, list) else x} {what}"
            for x, what in ((variants, "variant"), (analysis, "analysis"), (reported, "reported"))
            if x
        ]
        caption = (
            f"One row per method (its main configuration). {MARK}: not significantly different from the next "
            f"row (seed-aware test). " + (f"Not shown: {', '.join(extra)} rows; " if extra else "") + f"all in {where}"
        )
        table = Table(
            title=f"{key[0]} - profile {key[1]}: ranked", title_justify="left", caption=caption, caption_justify="left"
        )
        table.add_column("#", justify="right")
        table.add_column("Method", overflow="fold", ratio=1)
        for name in ("Seeds", "R1 [95% CI]", "R10", map_header(ranked)):
            table.add_column(name, justify="right", no_wrap=True)
        for i, r in enumerate(ranked):
            test = pairs[i] if i < len(pairs) else {}
            mark = lambda m: MARK if m in test and not test[m].significant else ""  # noqa: E731
            table.add_row(
                str(i + 1),
                names[id(r)] + origin_mark(r),
                seeds_text(r),
                fmt_value(r, "R1") + mark("R1"),
                fmt_value(r, "R10", with_ci=False),
                fmt_value(r, "mAP", with_ci=False) + mark("mAP"),
            )
        out.append(table)
    return out


def find_row(board: Any, spec: str, dataset: Optional[str] = None) -> tuple[tuple[str, str], Any]:
    """The one row whose submission file (path or name, with or without .json[.gz]; any of a pooled
    row's seeds) or label is ``spec``, within ``dataset`` when given. A label found in several tables
    (the same method on both synthetic sets) must be narrowed with ``dataset``."""

    want = spec.split("/")[-1]
    hits = []
    for key, rows in board.tables.items():
        if dataset is not None and key[0] != dataset:
            continue
        names = labels(rows)
        for r in rows:
            stems = [p.split("/")[-1] for p in [r.path, *(x.path for x in getattr(r, "runs", []))] if p]
            if spec in (names[id(r)], r.label) or any(want in (st, st.split(".json")[0]) for st in stems):
                hits.append((key, r))
    tables = sorted({k for k, _ in hits})
    if len(hits) > 1 and len(tables) > 1:
        raise SubmissionError(
            f"--compare {spec!r} names rows in {len(tables)} tables ("
            + ", ".join(f"{d} / {p}" for d, p in tables)
            + "): add --dataset NAME"
        )
    if len(hits) != 1:
        where = f" in {dataset}" if dataset else ""
        raise SubmissionError(
            f"--compare {spec!r}: {'no' if not hits else len(hits)} rows match{where} "
            "(give a submission file name or an exact row label)"
        )
    return hits[0]


def compare_lines(board: Any, a: str, b: str, dataset: Optional[str] = None) -> list[str]:
    """The seed-aware test of two rows of one table, one line per metric (benchmark.evaluation.significance),
    the seed variance pooled over the table's trained rows."""

    (ka, ra), (kb, rb) = find_row(board, a, dataset), find_row(board, b, dataset)
    if ka != kb:
        raise SubmissionError(f"--compare: {a!r} and {b!r} are in different tables ({ka} vs {kb})")
    ranked, _, _ = split_rows(board.tables[ka])
    trained = [*ranked, *(r for members in variant_groups(board.tables[ka]).values() for r in members)]
    tests = compare_rows(ra, rb, pool=table_pool(trained))
    if not tests:
        raise SubmissionError(f"--compare: {a!r} and {b!r} cannot be paired (both must be re-scored on the same split)")
    return [f"test, {ka[0]} ({ka[1]}): {METHOD}"] + [t.describe() for t in tests.values()]
