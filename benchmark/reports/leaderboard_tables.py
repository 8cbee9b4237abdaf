"""Leaderboard tables: Markdown, LaTeX and the narrow terminal table, split by purpose.

Per (dataset, profile) the rows are split into

* **ranked**: one row per method, its declared main configuration (``row.main``, see
  :mod:`benchmark.reports.leaderboard_seeds`), its training seeds pooled, numbered by R1, with
  R1's 95% CI (over seeds and queries) and the number of seeds; R1 or mAP@K marked † when the
  seed-aware test (:mod:`benchmark.evaluation.significance`) does not separate the row from the
  next ranked one, a table of those comparisons, and a table of each method against the best;
* **variants**: per method, its other trained rows (ablations, variants, second stages, recipe
  changes, zero-shot starts), each compared with the method's main row;
* **analysis** (not ranked): untrained controls, test-time oracles, other runs' weights and
  rows flagged dirty or partial;
* **reported**: published numbers with their sources (``results/reported.json``);
* **run details**: parameters, training time, seed, date and status of every reproduced row.

Rows are duck-typed ``benchmark.reports.leaderboard.Row`` objects (this module does not import the
leaderboard, which imports it).
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from benchmark.evaluation.significance import PairedResult, fmt_p

SHOWN_KS = (1, 5, 10)
DASH = "–"
MARK = "†"
CONTROL_METRICS = ("R1", "R10")  # compared with the untrained control (R10: where R1 is at the floor)


# --- which table a row belongs to ---------------------------------------------------------------


def flags(row: Any) -> list[str]:
    """Why a reproduced row is not ranked ([] for a ranked row). A run from a dirty working tree
    (``row.dirty``) stays ranked, its tree state shown in the run details: its rankings still
    re-score, and 40 of the first 71 committed rows were made so."""
    out = []
    if getattr(row, "partial", False):
        out.append("partial")
    if row.start == "untrained":
        out.append("untrained control")
    if "oracle" in (row.variant or ""):
        out.append("oracle")
    if "weights of " in row.stage:
        out.append("other run's weights")
    if row.analysis and not out:
        out.append("analysis")
    return out


def tree_state(row: Any, dash: str = DASH) -> str:
    """ "dirty" (uncommitted changes when the run was made), "clean", or a dash (not recorded)."""
    dirty = getattr(row, "dirty", None)
    return dash if dirty is None else ("dirty" if dirty else "clean")


def split_rows(rows: Sequence[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """(ranked: the methods' main rows, analysis, reported), each in the table's order; the
    other trained rows are :func:`variant_groups`'."""
    reported = [r for r in rows if r.source == "reported"]
    analysis = [r for r in rows if r.source != "reported" and flags(r)]
    ranked = [r for r in rows if r.source != "reported" and not flags(r) and getattr(r, "main", False)]
    return ranked, analysis, reported


def main_rows(rows: Sequence[Any]) -> dict[str, Any]:
    """method -> its main row, for the methods that have one in ``rows``."""
    return {r.method: r for r in split_rows(rows)[0]}


def variant_groups(rows: Sequence[Any]) -> dict[str, list[Any]]:
    """method -> its trained rows other than the main one, in the table's order; methods in the
    order of their main rows' ranks, then those without a main row by name."""
    ranked = split_rows(rows)[0]
    order = {r.method: i for i, r in enumerate(ranked)}
    groups: dict[str, list[Any]] = {}
    for r in rows:
        if r.source != "reported" and not flags(r) and not getattr(r, "main", False):
            groups.setdefault(r.method, []).append(r)
    return {m: groups[m] for m in sorted(groups, key=lambda m: (order.get(m, len(order)), m))}


# --- cells ------------------------------------------------------------------------------------


def seeds_of(row: Any) -> list[int]:
    """The training seeds a row pools (one for a single run; [] for a reported row)."""
    if getattr(row, "runs", None):
        return [r.seed for r in row.runs]
    return [row.seed] if row.seed is not None else []


def seeds_text(row: Any, dash: str = DASH) -> str:
    """ "1 seed" / "3 seeds" (a dash for reported rows)."""
    n = len(seeds_of(row))
    return dash if n == 0 else f"{n} seed{'s' if n != 1 else ''}"


def origin_mark(row: Any) -> str:
    """ " (external)" for a row whose training the harness did not run (``source: "external"``),
    beside " (unverified)"; a plugin evaluated from outside weights says so in its label instead
    ("external-weights")."""
    return " (external)" if getattr(row, "source", "") == "external" else ""


def fmt_value(row: Any, name: str, *, with_ci: bool = True, dash: str = DASH) -> str:
    if name not in row.values:
        return dash
    text = f"{row.values[name]:.2f}"
    ci = row.cis.get(name)
    if with_ci and ci is not None:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def fmt_control(row: Any, metric: str = "R1", dash: str = DASH) -> str:
    """``metric`` gained over the untrained control; "(n.s.)" when the control's value lies
    inside the trained row's 95% CI, i.e. the training is not shown to have helped."""
    if metric not in row.control or metric not in row.values:
        return dash
    base, ci = row.control[metric], row.cis.get(metric)
    text = f"{row.values[metric] - base:+.2f}"
    return text + " (n.s.)" if ci is not None and ci[0] <= base else text


def fmt_controls(row: Any, dash: str = DASH) -> str:
    """The "R1 / R10 vs untrained" cell."""
    if not row.control:
        return dash
    return " / ".join(fmt_control(row, m, dash) for m in CONTROL_METRICS)


def fmt_params(n: Optional[int], dash: str = DASH) -> str:
    if n is None:
        return dash
    for scale, suffix, digits in ((1e9, "B", 2), (1e6, "M", 1), (1e3, "K", 1)):
        if n >= scale:
            return f"{n / scale:.{digits}f}{suffix}"
    return str(n)


def fmt_duration(seconds: Optional[float], dash: str = DASH) -> str:
    if seconds is None:
        return dash
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def labels(rows: Sequence[Any]) -> dict[int, str]:
    """id(row) -> label, with the seed appended where one label appears with several seeds."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.label] = counts.get(r.label, 0) + 1
    return {id(r): f"{r.label}, seed {r.seed}" if counts[r.label] > 1 and r.seed is not None else r.label for r in rows}


def map_header(rows: Sequence[Any]) -> str:
    found = {r.map_label for r in rows if "mAP" in r.values}
    if not found:
        return "mAP"
    return found.pop() if len(found) == 1 else "mAP@K"


def _map_cell(row: Any, multi: bool, dash: str) -> str:
    text = fmt_value(row, "mAP", with_ci=False, dash=dash)
    return text + f" ({row.map_label})" if multi and "mAP" in row.values else text


def _marked(text: str, test: Optional[PairedResult], mark: str) -> str:
    return text + mark if test is not None and not test.significant else text


def note_refs(rows: Sequence[Any]) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """id(row) -> "[n]" for rows with a note, and the numbered notes."""
    notes: list[tuple[str, str]] = []
    index: dict[str, str] = {}
    refs: dict[int, str] = {}
    for r in rows:
        if r.note:
            if r.note not in index:
                index[r.note] = f"[{len(index) + 1}]"
                notes.append((index[r.note], r.note))
            refs[id(r)] = index[r.note]
    return refs, notes


def ranked_cells(
    rows: Sequence[Any],
    names: dict[int, str],
    pairs: Sequence[dict[str, PairedResult]],
    *,
    dash: str = DASH,
    mark: str = MARK,
) -> tuple[list[str], list[list[str]]]:
    """The ranked table: seeds, R1 with its CI, R5, R10, mAP@K, gain over the untrained control."""
    controls = any(r.control for r in rows)
    mh = map_header(rows)
    head = ["#", "Method", "Seeds", "R1 [95% CI]", "R5", "R10", mh, *(["vs untrained R1 / R10"] if controls else [])]
    body = []
    for i, r in enumerate(rows):
        test = pairs[i] if i < len(pairs) else {}
        label = names[id(r)] + origin_mark(r) + (" (unverified)" if r.status == "unverified" else "")
        body.append(
            [
                str(i + 1),
                label,
                seeds_text(r, dash),
                _marked(fmt_value(r, "R1", dash=dash), test.get("R1"), mark),
                fmt_value(r, "R5", with_ci=False, dash=dash),
                fmt_value(r, "R10", with_ci=False, dash=dash),
                _marked(_map_cell(r, mh == "mAP@K", dash), test.get("mAP"), mark),
                *([fmt_controls(r, dash)] if controls else []),
            ]
        )
    return head, body


def pair_cells(
    rows: Sequence[Any], pairs: Sequence[dict[str, PairedResult]], *, dash: str = DASH
) -> tuple[list[str], list[list[str]]]:
    """Each ranked row against the next: difference [95% CI] and p-value per metric."""
    mh = map_header(rows)
    head = ["Rows", "ΔR1 [95% CI]", "p (R1)", f"Δ{'AP' + mh[3:] if mh.startswith('mAP') else mh} [95% CI]", "p (AP)"]
    body = []
    for i, test in enumerate(pairs[: max(len(rows) - 1, 0)]):
        cells = [f"{i + 1} vs {i + 2}"]
        for m in ("R1", "mAP"):
            t = test.get(m)
            cells += [f"{t.diff:+.2f} [{t.ci[0]:+.2f}, {t.ci[1]:+.2f}]", fmt_p(t.p_value)] if t else [dash, dash]
        body.append(cells)
    return head, body


def test_basis(tests: dict[str, PairedResult], dash: str = DASH) -> str:
    """What the test's variance holds: "seeds (own)", "seeds (pooled)" or "queries only (1 seed)"."""
    t = tests.get("R1") or next(iter(tests.values()), None)
    if t is None:
        return dash
    return "queries only (1 seed)" if t.seed_term == "none" else f"seeds ({t.seed_term}) + queries"


def _diff_cells(tests: dict[str, PairedResult], dash: str) -> list[str]:
    cells = []
    for m in ("R1", "mAP"):
        t = tests.get(m)
        cells += [f"{t.diff:+.2f} [{t.ci[0]:+.2f}, {t.ci[1]:+.2f}]", fmt_p(t.p_value)] if t else [dash, dash]
    return cells


def best_cells(
    rows: Sequence[Any], names: dict[int, str], tests: Sequence[dict[str, PairedResult]], *, dash: str = DASH
) -> tuple[list[str], list[list[str]]]:
    """Each ranked method (but the first) against the best: difference [95% CI], p, the test's basis."""
    mh = map_header(rows)
    head = [
        "#",
        "Method",
        "ΔR1 to #1 [95% CI]",
        "p (R1)",
        f"Δ{'AP' + mh[3:] if mh.startswith('mAP') else mh} to #1",
        "p (AP)",
        "Variance",
    ]
    body = [
        [str(i + 1), names[id(r)], *_diff_cells(tests[i], dash), test_basis(tests[i], dash)]
        for i, r in enumerate(rows)
        if i > 0 and i < len(tests)
    ]
    return head, body


def variant_cells(
    main: Optional[Any],
    rows: Sequence[Any],
    names: dict[int, str],
    tests: Sequence[dict[str, PairedResult]],
    *,
    dash: str = DASH,
) -> tuple[list[str], list[list[str]]]:
    """A method's other rows against its main row (``main`` None: it has none in this table)."""
    everything = [main, *rows] if main is not None else list(rows)
    mh = map_header(everything)
    head = [
        "Configuration",
        "Seeds",
        "R1 [95% CI]",
        "R10",
        mh,
        "ΔR1 to main [95% CI]",
        "p (R1)",
        "ΔAP to main",
        "p (AP)",
    ]
    body = []
    if main is not None:
        body.append(
            [
                names[id(main)] + " (main)",
                seeds_text(main, dash),
                fmt_value(main, "R1", dash=dash),
                fmt_value(main, "R10", with_ci=False, dash=dash),
                _map_cell(main, mh == "mAP@K", dash),
                "",
                "",
                "",
                "",
            ]
        )
    for i, r in enumerate(rows):
        test = tests[i] if i < len(tests) else {}
        body.append(
            [
                names[id(r)],
                seeds_text(r, dash),
                fmt_value(r, "R1", dash=dash),
                fmt_value(r, "R10", with_ci=False, dash=dash),
                _map_cell(r, mh == "mAP@K", dash),
                *_diff_cells(test, dash),
            ]
        )
    return head, body


def analysis_cells(
    rows: Sequence[Any], names: dict[int, str], *, dash: str = DASH
) -> tuple[list[str], list[list[str]]]:
    mh = map_header(rows)
    head = ["Method", "R1 [95% CI]", "R5", "R10", mh, "Not ranked because"]
    body = [
        [
            names[id(r)],
            fmt_value(r, "R1", dash=dash),
            fmt_value(r, "R5", with_ci=False, dash=dash),
            fmt_value(r, "R10", with_ci=False, dash=dash),
            _map_cell(r, mh == "mAP@K", dash),
            ", ".join(flags(r)),
        ]
        for r in rows
    ]
    return head, body


def reported_cells(
    rows: Sequence[Any], names: dict[int, str], refs: dict[int, str], *, dash: str = DASH
) -> tuple[list[str], list[list[str]]]:
    ks = sorted({int(n[1:]) for r in rows for n in r.values if re.fullmatch(r"R\d+", n)} | set(SHOWN_KS))
    head = ["Method", *(f"R{k}" for k in ks), map_header(rows), "Date", "Source"]
    body = [
        [
            names[id(r)],
            *(fmt_value(r, f"R{k}", with_ci=False, dash=dash) for k in ks),
            fmt_value(r, "mAP", with_ci=False, dash=dash),
            r.date or dash,
            f"reported {refs.get(id(r), '')}".strip(),
        ]
        for r in rows
    ]
    return head, body


def fmt_rate(value: Optional[float], dash: str = DASH) -> str:
    """Queries/s as recorded (a dash for runs before it was recorded, or served from the feature cache)."""
    if value is None:
        return dash
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def details_cells(
    rows: Sequence[Any], names: dict[int, str], refs: dict[int, str], ranks: dict[int, int], *, dash: str = DASH
) -> tuple[list[str], list[list[str]]]:
    head = ["#", "Method", "Params", "Train time", "Queries/s", "Seeds", "R1 per seed", "Date", "Tree", "Status"]
    body = [
        [
            str(ranks[id(r)]) if id(r) in ranks else dash,
            names[id(r)],
            fmt_params(r.num_parameters, dash),
            fmt_duration(r.train_s, dash),
            fmt_rate(r.queries_per_s, dash),
            ", ".join(map(str, seeds_of(r))) or dash,
            per_seed_text(r, "R1", dash),
            r.date or dash,
            tree_state(r, dash),
            f"{r.status} {refs.get(id(r), '')}".strip(),
        ]
        for r in rows
    ]
    return head, body


def per_seed_text(row: Any, metric: str = "R1", dash: str = DASH) -> str:
    """The metric at each seed the row pools ("31.70 / 31.90 / 27.40"), or its one value."""
    runs = getattr(row, "runs", None) or [row]
    return " / ".join(f"{r.values[metric]:.2f}" if metric in r.values else dash for r in runs)


def table_cells(
    rows: Sequence[Any], *, dash: str = DASH, note_refs: Optional[Sequence[str]] = None
) -> tuple[list[str], list[list[str]]]:
    """All rows in one table (the pre-split layout), kept for callers that want every column."""
    names = labels(rows)
    controls = any(r.start == "untrained" for r in rows)
    mh = map_header(rows)
    head = [
        "#",
        "Method",
        *(f"R{k}" for k in SHOWN_KS),
        mh,
        *(["R1 / R10 vs untrained"] if controls else []),
        "Params",
        "Train time",
        "Date",
        "Source",
    ]
    body, rank = [], 0
    for i, r in enumerate(rows):
        rank += 0 if r.analysis else 1
        origin = "external" if r.source == "external" else "reproduced"
        source = {"verified": f"{origin}, verified", "unverified": f"{origin}, unverified"}.get(r.status, "reported")
        if note_refs is not None and note_refs[i]:
            source += f" {note_refs[i]}"
        body.append(
            [
                dash if r.analysis else str(rank),
                names[id(r)],
                *(fmt_value(r, f"R{k}", dash=dash) for k in SHOWN_KS),
                _map_cell(r, mh == "mAP@K", dash),
                *([fmt_controls(r, dash)] if controls else []),
                fmt_params(r.num_parameters, dash),
                fmt_duration(r.train_s, dash),
                r.date or dash,
                source,
            ]
        )
    return head, body
