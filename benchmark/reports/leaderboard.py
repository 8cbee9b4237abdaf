"""The leaderboard: tables regenerated from submissions, never from claimed numbers.

:func:`regenerate` reads ``results/submissions/*.json[.gz]`` and ``results/reported.json``
and writes ``results/leaderboard.md``, ``results/leaderboard.tex``, rank-k curves under
``results/plots/`` and the static site ``results/site/``. Per (dataset, profile) the ranked
rows (by R1) are compared with their neighbours by a paired test (:mod:`benchmark.evaluation.significance`);
rendering lives in ``leaderboard_tables`` / ``leaderboard_render`` / ``leaderboard_plots`` / ``site``.

* A reproduced submission is re-scored (:func:`benchmark.record.rescore.rescore`) against its
  dataset's ground truth when ``load_splits`` can provide the dataset; the row then shows
  the re-scored R1/R5/R10 (95% bootstrap CIs) and mAP@K and is marked "verified". When the
  dataset is unavailable the row shows the claimed numbers and is marked "unverified".
  A submission that fails validation or re-scoring, a symbolic link or a non-regular file is
  left out with one line (``Leaderboard.skipped``; :mod:`benchmark.record.collect`) and the rest is
  regenerated; duplicates are listed once.
* Reported rows (published numbers, ``results/reported.json``) are shown as such, with
  their source and protocol in a note.
* External rows (``source: "external"``: embeddings or a run file made outside the harness,
  docs/external.md) are re-scored and ranked like reproduced rows, marked "(external)" with a
  note; a plugin evaluated from weights files without training is labelled "external-weights".

Output is deterministic (no regeneration timestamp; dates are the runs' own), so the
committed ``leaderboard.md`` can be checked for drift. Every file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from benchmark.core.atomic import atomic_write_bytes
from benchmark.evaluation.significance import adjacent, against, table_pool
from benchmark.record.config_diff import strip_recipe
from benchmark.reports.comparison_cache import ComparisonCache
from benchmark.reports.leaderboard_loader import registry_loader  # noqa: F401  (re-exported)
from benchmark.reports.leaderboard_plots import render_plots
from benchmark.reports.leaderboard_render import plot_filename, render_latex, render_markdown  # noqa: F401
from benchmark.reports.leaderboard_rows import (  # noqa: F401  (the leaderboard's API: rows, collecting, reported)
    LeaderboardError,
    Row,
    _ci,
    _common,
    _dataset_key,
    _external_note,
    _rerank_note,
    _row_unverified,
    _row_verified,
    _stage,
    _train_seconds,
    collect_rows,
    is_analysis,
    load_reported,
    submission_paths,
)
from benchmark.reports.leaderboard_seeds import mark_main, pool_seeds, registry_main
from benchmark.reports.leaderboard_tables import (  # noqa: F401  (re-exported: the tables' cells and formats)
    CONTROL_METRICS,
    DASH,
    SHOWN_KS,
    fmt_control,
    fmt_controls,
    fmt_duration,
    fmt_params,
    fmt_value,
    main_rows,
    split_rows,
    table_cells,
    variant_groups,
)
from benchmark.reports.site import SITE_SUBDIR, render_site
from benchmark.reports.terminal_tables import print_run_table  # noqa: F401  (re-exported)
from datasets.records import DatasetSplits

LoadSplits = Callable[[Mapping[str, Any]], Optional[DatasetSplits]]


@dataclass
class Leaderboard:
    tables: dict[tuple[str, str], list[Row]]
    paths: list[Path] = field(default_factory=list)
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # see attach_pairs
    vs_best: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # ranked rows against #1
    vs_main: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = field(
        default_factory=dict
    )  # variants against their main row
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) left out (benchmark.record.collect)


def build(rows: Sequence[Row], main_of: Optional[Callable[[str], Mapping[str, Any]]] = None) -> Leaderboard:
    """Tables keyed by (dataset, profile: the protocol, so that rows of two protocols never share
    a table), sorted; each configuration's training seeds pooled into one row and each method's
    main row marked (:mod:`benchmark.reports.leaderboard_seeds`; ``main_of(method)`` gives a
    method's declared main configuration, default: the registry's); rows by R1 (missing last),
    analysis rows (:func:`is_analysis`) after all others."""

    tables: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        tables.setdefault((r.dataset, r.profile), []).append(r)
    for key in tables:
        tables[key].sort(key=lambda r: (r.label, r.status, r.seed if r.seed is not None else -1, r.path))
        tables[key] = pool_seeds(tables[key])
        tables[key].sort(
            key=lambda r: (
                r.analysis,
                -r.values.get("R1", -1.0),
                r.label,
                r.status,
                r.seed if r.seed is not None else -1,
                r.path,
            )
        )
        mark_main(tables[key], main_of or registry_main)
        _attach_controls(tables[key])
    ordered = {k: tables[k] for k in sorted(tables)}
    return Leaderboard(tables=ordered)


def _attach_controls(rows: Sequence[Row]) -> None:
    """Give each trained row the values of its untrained control: the ``--epochs 0`` evaluation
    of the same method, variant and second stage from random weights (its seeds pooled as the
    trained row's are), when one is listed.
    A row trained under a changed recipe (``train.epochs-8``) is compared with the control of its
    model: an untrained network trains nothing, so its variant carries no recipe."""

    def key(r: Row) -> tuple:
        return (r.method, strip_recipe(r.variant, r.recipe), r.rerank)

    controls = {key(r): dict(r.values) for r in rows if r.start == "untrained"}
    for r in rows:
        if r.start is None and r.source == "reproduced" and not r.analysis:
            r.control = controls.get(key(r), {})


# --- regeneration ------------------------------------------------------------------------------


def regenerate(
    results_dir: Path | str = "results",
    *,
    load_splits: Optional[LoadSplits] = None,
    reported_path: Optional[Path] = None,
    plots: bool = True,
    site: bool = True,
    use_cache: bool = True,
) -> Leaderboard:
    """Re-score and re-render everything. A submission (or ``reported.json``) that cannot be
    used is left out and listed in ``board.skipped`` (the rest is written); nothing is written
    before everything is rendered.

    ``load_splits(dataset_block)`` gets a submission's ``dataset`` dict (name, size, seed,
    annotation checksum, ...) and returns the splits, or ``None`` when the dataset is not
    available (the row is then marked unverified). See :func:`registry_loader`.
    """
    results_dir = Path(results_dir)
    skipped: list[tuple[str, str]] = []
    board = attach_pairs(
        build(collect_rows(results_dir, load_splits, reported_path, skipped, use_cache=use_cache)), use_cache=use_cache
    )
    board.skipped = skipped
    outputs: list[tuple[Path, bytes]] = [
        (results_dir / "leaderboard.md", render_markdown(board).encode("utf-8")),
        (results_dir / "leaderboard.tex", render_latex(board).encode("utf-8")),
    ]
    plot_dir, site_dir = results_dir / "plots", results_dir / SITE_SUBDIR
    if plots:
        outputs += [(plot_dir / name, png) for name, png in render_plots(board)]
    if site:
        outputs += [(site_dir / name, data) for name, data in render_site(board)]
    for path, data in outputs:  # everything rendered before the first write
        atomic_write_bytes(path, data)
    keep = {p for p, _ in outputs}
    for wanted, folder, pattern in ((plots, plot_dir, "*__*.png"), (site, site_dir, "*")):
        if wanted and folder.is_dir():
            for stale in folder.glob(pattern):
                if stale.is_file() and stale not in keep:
                    stale.unlink()
    board.paths = [p for p, _ in outputs]
    return board


def attach_pairs(board: Leaderboard, use_cache: bool = True) -> Leaderboard:
    """Per table, the seed-aware tests (:func:`benchmark.evaluation.significance.seed_aware_tests`,
    one-seed rows borrowing the seed variance pooled over the table's trained multi-seed rows):
    each ranked row against the next (``pairs``, the † marks), against the best (``vs_best``),
    and each method's other rows against its main row (``vs_main``); read back from the
    comparison cache (:mod:`benchmark.reports.comparison_cache`) when nothing they depend on changed."""

    memo = ComparisonCache() if use_cache else None
    for key, rows in board.tables.items():
        ranked = split_rows(rows)[0]
        groups = variant_groups(rows)
        pool = table_pool([*ranked, *(r for members in groups.values() for r in members)])
        board.pairs[key] = adjacent(ranked, pool=pool, memo=memo)
        board.vs_best[key] = against(ranked, ranked[0], pool=pool, memo=memo) if ranked else []
        mains = main_rows(rows)
        board.vs_main[key] = {
            m: against(members, mains[m], pool=pool, memo=memo) if m in mains else [{} for _ in members]
            for m, members in groups.items()
        }
    return board
