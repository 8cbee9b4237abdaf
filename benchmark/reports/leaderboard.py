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

import numpy as np

from benchmark.core import safe_json
from benchmark.core.atomic import atomic_write_bytes
from benchmark.record.config_diff import recipe_changes, strip_recipe
from benchmark.record.record import Submission
from benchmark.record.submission import (
    SUBMISSIONS_SUBDIR,
    SubmissionError,
    rerank_stage,
    schema_errors,
    submission_start,
)
from benchmark.reports.leaderboard_loader import registry_loader  # noqa: F401  (re-exported)
from benchmark.reports.leaderboard_plots import render_plots
from benchmark.reports.leaderboard_render import plot_filename, render_latex, render_markdown  # noqa: F401
from benchmark.reports.leaderboard_tables import (  # noqa: F401  (re-exported: the tables' cells and formats)
    CONTROL_METRICS,
    DASH,
    SHOWN_KS,
    fmt_control,
    fmt_controls,
    fmt_duration,
    fmt_params,
    fmt_value,
    table_cells,
)
from benchmark.reports.site import SITE_SUBDIR, render_site
from benchmark.reports.terminal_tables import print_run_table  # noqa: F401  (re-exported)
from datasets.records import DatasetSplits

LoadSplits = Callable[[Mapping[str, Any]], Optional[DatasetSplits]]


class LeaderboardError(SubmissionError):
    """A submission or the reported-results file is invalid; nothing was written."""


@dataclass
class Row:
    dataset: str
    profile: str
    method: str
    variant: str
    source: str  # "reproduced" | "external" (outputs made outside the harness) | "reported"
    status: str  # "verified" | "unverified" | "reported"
    values: dict[str, float] = field(default_factory=dict)  # R1, R5, R10, ... and "mAP"
    cis: dict[str, Optional[tuple[float, float]]] = field(default_factory=dict)
    map_label: str = "mAP"
    num_parameters: Optional[int] = None
    train_s: Optional[float] = None
    date: str = ""
    seed: Optional[int] = None
    note: str = ""
    curve: Optional[list[float]] = None  # R@k for k = 1..len(curve) (verified rows)
    path: str = ""
    stage: str = ""  # "" first stage; "re-ranked, top-10" / "re-ranked, all pairs" (see _stage)
    analysis: bool = False  # not ranked: another run's weights (--weights) or a test-time oracle
    start: Optional[str] = None  # "untrained" | "zero-shot" for an evaluation of initial weights
    rerank: Optional[str] = None  # the second stage (submission.rerank_stage)
    control: dict[str, float] = field(
        default_factory=dict
    )  # its untrained control's values (same method, variant, stage, seed)
    recipe: dict[str, Any] = field(default_factory=dict)  # training-recipe changes from the profile (config_diff)
    per_query: dict[str, Any] = field(
        default_factory=dict
    )  # "R1", "mAP": [Nq] per-query values (verified rows; paired tests)
    split: str = ""  # the annotation checksum of the split the row was scored on (rows pair only on the same split)
    breakdowns: dict[str, Any] = field(default_factory=dict)  # per-attribute buckets of the (re-scored) metrics
    provenance: dict[str, Any] = field(default_factory=dict)  # the submission's provenance block (site)
    queries_per_s: Optional[float] = None  # evaluation cost: provenance.inference (evaluate.inference_cost)
    dirty: Optional[bool] = None  # made from a working tree with uncommitted changes (None: not recorded)
    partial: bool = False  # training stopped (--max-steps) before its recipe's end: analysis, never ranked
    duplicates: list[str] = field(
        default_factory=list
    )  # other files holding the same submission (benchmark.record.collect)
    runs: list["Row"] = field(
        default_factory=list
    )  # the per-seed rows this row pools (leaderboard_seeds); [] a single run
    main: bool = False  # its method's declared main configuration: the method's row in the ranked table

    @property
    def label(self) -> str:
        base = f"{self.method} ({self.variant})" if self.variant else self.method
        return f"{base}, {self.stage}" if self.stage else base


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


# --- collecting rows ---------------------------------------------------------------------


def submission_paths(results_dir: Path) -> list[Path]:
    sub_dir = results_dir / SUBMISSIONS_SUBDIR
    if not sub_dir.is_dir():
        return []
    return sorted(
        p for p in sub_dir.iterdir() if p.is_file() and (p.name.endswith(".json") or p.name.endswith(".json.gz"))
    )


def _dataset_key(ds: Mapping[str, Any]) -> tuple:
    return (ds["name"], ds.get("size"), ds.get("seed"), ds["annotation_checksum"])


def collect_rows(
    results_dir: Path,
    load_splits: Optional[LoadSplits] = None,
    reported_path: Optional[Path] = None,
    skipped: Optional[list[tuple[str, str]]] = None,
    use_cache: bool = True,
    keep: Optional[Callable[[Mapping[str, Any]], bool]] = None,
) -> list[Row]:
    """Rows of every submission (re-scored when possible, or read from the re-scoring cache when
    neither the file, its data nor the scoring code changed: :mod:`benchmark.record.rescore_cache`)
    and every reported result.

    Files are chosen by :func:`benchmark.record.collect.gather` (symbolic links and non-regular files
    refused, duplicates listed once). A file that cannot be used is appended to ``skipped``
    as ``(path, why)`` and the rest is collected; with ``skipped`` None any such file raises
    :class:`LeaderboardError` instead. ``keep(submission)``: collect only the submissions it accepts
    (e.g. one dataset's, so that no other dataset is loaded)."""
    from benchmark.record import collect, rescore_cache

    rows: list[Row] = []
    faults: list[tuple[str, str]] = []
    cache: dict[tuple, Optional[DatasetSplits]] = {}
    items, refused = collect.gather(results_dir)
    faults += refused
    for item in items:
        path, sub = item.path, item.submission
        if keep is not None and not keep(sub):
            continue
        try:
            key = _dataset_key(sub["dataset"])
            if key not in cache:
                cache[key] = load_splits(sub["dataset"]) if load_splits is not None else None
            splits = cache[key]
            if splits is None:
                rows.append(_row_unverified(sub, path, results_dir))
            else:
                done = rescore_cache.rescored(path, splits, sub, use_cache=use_cache)
                rows.append(_row_verified(sub, done["metrics"], done["curve"], done["topk"], path, results_dir))
                rows[-1].per_query = {m: np.asarray(v, dtype=np.float64) for m, v in done["per_query"].items()}
        except SubmissionError as exc:
            faults.append((str(path), collect.one_line(exc).removeprefix(f"{path} ").removeprefix(f"{path}: ")))
            continue
        row = rows[-1]
        flags = collect.flags(sub)
        row.dirty, row.partial, row.duplicates = flags["dirty"], flags["partial"], list(item.duplicates)
        note = collect.duplicate_note(item)
        row.note = "; ".join(n for n in (row.note, note) if n)
        if row.partial:
            row.analysis = True
            row.stage = ", ".join(s for s in (row.stage, "partial") if s)
    if reported_path is None:
        reported_path = results_dir / "reported.json"
    if reported_path.exists():
        try:
            rows += load_reported(reported_path)
        except SubmissionError as exc:
            faults.append((str(reported_path), collect.one_line(exc).removeprefix(f"{reported_path}: ")))
    if faults and skipped is None:
        raise LeaderboardError("leaderboard not regenerated:\n" + "\n".join(f"{p}: {w}" for p, w in faults))
    if skipped is not None:
        skipped += faults
    return rows


def _common(sub: Submission, path: Path, results_dir: Path) -> dict[str, Any]:
    prov = sub["provenance"]
    try:
        rel = path.relative_to(results_dir).as_posix()
    except ValueError:
        rel = path.name
    protocol, start = sub.get("protocol", {}), submission_start(sub)
    return dict(
        dataset=sub["dataset"]["name"],
        profile=sub["profile"]["name"],
        method=sub["method"]["name"],
        variant=sub["method"]["variant"],
        source=sub.get("source", "reproduced"),
        num_parameters=sub["method"]["num_parameters"],
        train_s=_train_seconds(prov, rerank_stage(protocol) is None),
        date=prov["date"][:10],
        seed=prov["seed"],
        path=rel,
        note="; ".join(n for n in (_external_note(sub), _rerank_note(protocol)) if n),
        stage=_stage(protocol, prov, start),
        analysis=is_analysis(sub),
        start=start,
        rerank=rerank_stage(protocol),
        recipe={}
        if start
        else recipe_changes(
            sub["profile"]["name"], sub["profile"].get("train") or {}, sub["profile"].get("method_recipe")
        ),
        split=str(sub["dataset"].get("annotation_checksum", "")),
        provenance=dict(prov),
        queries_per_s=(prov.get("inference") or {}).get("queries_per_s"),
    )


def is_analysis(sub: Submission) -> bool:
    """A row listed below the ranked ones, unranked: an evaluation of another run's weights
    under changed settings (``--weights``), a variant named ``...oracle...``, which sees
    ground truth at test time (e.g. RICE ``ipd=oracle``: the true boxes in place of the detector),
    or an untrained network (``--epochs 0`` from random weights: the control of its trained row)."""
    return (
        bool(sub["provenance"].get("initial_weights"))
        or "oracle" in (sub["method"].get("variant") or "")
        or submission_start(sub) == "untrained"
    )


def _train_seconds(prov: Mapping[str, Any], first_stage: bool = True) -> Optional[float]:
    """Training wall time of the row's weights. The sum of the epochs' times for a run resumed
    part-way (this process trained only the rest) and for a first-stage evaluation resumed from
    a finished checkpoint (e.g. the same weights scored on a regenerated test split); None (a
    dash) for a run that trained nothing itself (``--epochs 0``) and for a second-stage pass
    resumed from a finished checkpoint (its first-stage row already counts the training)."""
    training = prov.get("training") or {}
    seconds = prov["wall_time_s"].get("train")
    if training.get("resumed_from_step"):
        finished = training["resumed_from_step"] == training.get("steps")
        if finished and not first_stage:
            return None
        epochs = [e.get("wall_s") for e in training.get("history") or []]
        if epochs and all(isinstance(w, (int, float)) for w in epochs):
            return float(sum(epochs))
        if finished:
            return None
    return seconds if seconds else None


def _stage(protocol: Mapping[str, Any], prov: Mapping[str, Any], start: Optional[str] = None) -> str:
    """The label suffix of a row: untrained / zero-shot (``start``, see
    :func:`submission.starting_point`), its second stage, and whose weights it started from
    (``--weights``); "" for a first-stage row of a run that trained its own."""
    parts = [start] if start else []
    stage = rerank_stage(protocol)
    if stage is not None:
        parts.append("re-ranked, all pairs" if stage == "all" else f"re-ranked, top-{stage[3:]}")
    weights = prov.get("initial_weights")
    if isinstance(weights, Mapping):
        parts.append(f"weights of {weights.get('source') or str(weights.get('sha256', ''))[:8]}")
    return ", ".join(parts)


def _external_note(sub: Submission) -> str:
    """Why a row's training was not run by the harness: an external submission (its declared
    paper and input kind) or a plugin evaluated from weights files (``external-weights``)."""
    ext = sub["provenance"].get("external")
    if sub.get("source") == "external" and isinstance(ext, Mapping):
        return (
            f"external: {ext.get('kind')} made outside the harness ({ext.get('paper')}); its rankings are re-scored "
            f"here, its training was not run by the harness"
        )
    files = sub["provenance"].get("weights_files")
    if submission_start(sub) == "external-weights" and isinstance(files, Mapping):
        shown = ", ".join(f"{k} sha256 {str(v.get('sha256', ''))[:12]}" for k, v in sorted(files.items()))
        return f"external weights: evaluated without training from files trained outside the harness ({shown})"
    return ""


def _rerank_note(protocol: Mapping[str, Any]) -> str:
    """How the row's rankings were made: first-stage embeddings only, or re-ranked."""
    stage = rerank_stage(protocol)
    if stage is None:
        return ""
    if stage == "all":
        return f"re-ranked: second stage scored every pair of the group ({protocol.get('pairs_scored', 0)} pairs)"
    return f"re-ranked: second stage scored the first-stage {stage.replace('top', 'top-')}"


def _row_verified(
    sub: Submission, metrics: Mapping[str, Any], curve: list[float], topk: int, path: Path, results_dir: Path
) -> Row:
    ov = metrics["overall"]
    values = {n: e["value"] for n, e in ov.items() if n.startswith("R")}
    cis = {n: _ci(e) for n, e in ov.items() if n.startswith("R")}
    values["mAP"] = ov[f"mAP@{topk}"]["value"]
    cis["mAP"] = _ci(ov[f"mAP@{topk}"])
    return Row(
        status="verified",
        values=values,
        cis=cis,
        map_label=f"mAP@{topk}",
        curve=curve,
        breakdowns=metrics.get("breakdowns", {}),
        **_common(sub, path, results_dir),
    )


def _row_unverified(sub: Submission, path: Path, results_dir: Path) -> Row:
    m = sub["metrics"]
    ov = m["overall"]
    values = {n: e["value"] for n, e in ov.items() if n.startswith("R")}
    cis = {n: _ci(e) for n, e in ov.items() if n.startswith("R")}
    cut = m["map_cutoff"]
    name = f"mAP@{cut}" if cut is not None and f"mAP@{cut}" in ov else None
    if name:
        values["mAP"], cis["mAP"] = ov[name]["value"], _ci(ov[name])
    common = _common(sub, path, results_dir)
    claimed = "claimed numbers: the dataset was not available to re-score them"
    common["note"] = f"{claimed}; {common['note']}" if common["note"] else claimed
    return Row(
        status="unverified",
        values=values,
        cis=cis,
        map_label=name or "mAP",
        breakdowns=m.get("breakdowns", {}),
        **common,
    )


def _ci(entry: Mapping[str, Any]) -> Optional[tuple[float, float]]:
    ci = entry.get("ci95")
    return (float(ci[0]), float(ci[1])) if ci else None


def load_reported(path: Path) -> list[Row]:
    """Rows of ``reported.json`` (schema ``benchmark/record/schemas/reported-v1.json``)."""
    try:
        obj = safe_json.load(path, max_bytes=8 * 1024 * 1024)
    except safe_json.UntrustedJSONError as exc:
        raise LeaderboardError(str(exc)) from None
    errors = schema_errors(obj, "reported")
    if errors:
        raise LeaderboardError(f"{path}: {len(errors)} schema violation(s):\n  " + "\n  ".join(errors[:20]))
    rows = []
    for r in obj["rows"]:
        values = {n: float(v) for n, v in r["metrics"].items()}
        map_label = next((n for n in values if n.startswith("mAP")), "mAP")
        if map_label in values:
            values["mAP"] = values.pop(map_label)
        note = f"{r['source']}; protocol: {r['protocol']}"
        if r.get("training_data"):
            note += f"; trained on {r['training_data']}"
        if r.get("note"):
            note += f"; {r['note']}"
        rows.append(
            Row(
                dataset=r["dataset"],
                profile=r["profile"],
                method=r["method"],
                variant=r["variant"],
                source="reported",
                status="reported",
                values=values,
                cis={},
                map_label=map_label,
                num_parameters=r.get("num_parameters"),
                date=r.get("date", ""),
                note=note,
            )
        )
    return rows


def build(rows: Sequence[Row], main_of: Optional[Callable[[str], Mapping[str, Any]]] = None) -> Leaderboard:
    """Tables keyed by (dataset, profile: the protocol, so that rows of two protocols never share
    a table), sorted; each configuration's training seeds pooled into one row and each method's
    main row marked (:mod:`benchmark.reports.leaderboard_seeds`; ``main_of(method)`` gives a
    method's declared main configuration, default: the registry's); rows by R1 (missing last),
    analysis rows (:func:`is_analysis`) after all others."""
    from benchmark.reports.leaderboard_seeds import mark_main, pool_seeds, registry_main

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
    from benchmark.evaluation.significance import adjacent, against, table_pool
    from benchmark.reports.comparison_cache import ComparisonCache
    from benchmark.reports.leaderboard_tables import main_rows, split_rows, variant_groups

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
