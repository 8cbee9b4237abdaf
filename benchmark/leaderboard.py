"""The leaderboard: tables regenerated from submissions, never from claimed numbers.

:func:`regenerate` reads ``results/submissions/*.json[.gz]`` and ``results/reported.json``
and writes ``results/leaderboard.md``, ``results/leaderboard.tex`` and one rank-k curve
per table under ``results/plots/``. There is one table per (dataset, profile), ranked by R1.

* A reproduced submission is re-scored (:func:`benchmark.submission.rescore`) against its
  dataset's ground truth when ``load_splits`` can provide the dataset; the row then shows
  the re-scored R1/R5/R10 (95% bootstrap CIs) and mAP@K and is marked "verified". When the
  dataset is unavailable the row shows the claimed numbers and is marked "unverified".
  A submission that fails validation or re-scoring stops the regeneration
  (:class:`LeaderboardError`), leaving the previous files in place.
* Reported rows (published numbers, ``results/reported.json``) are shown as such, with
  their source and protocol in a note.

Output is deterministic (no regeneration timestamp; dates are the runs' own), so the
committed ``leaderboard.md`` can be checked for drift. Every file is written atomically.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from tabulate import tabulate

from benchmark import safe_json
from benchmark.atomic import atomic_write_bytes
from benchmark.config_diff import recipe_changes, strip_recipe
from benchmark.metrics import per_query_values
from benchmark.submission import (
    SUBMISSIONS_SUBDIR, SubmissionError, load_submission, rerank_stage, rescore, schema_errors, submission_start,
)
from datasets.records import DatasetSplits

LoadSplits = Callable[[Mapping[str, Any]], Optional[DatasetSplits]]
SHOWN_KS = (1, 5, 10)
DASH = "–"


class LeaderboardError(SubmissionError):
    """A submission or the reported-results file is invalid; nothing was written."""


@dataclass
class Row:
    dataset: str
    profile: str
    method: str
    variant: str
    source: str  # "reproduced" | "reported"
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
    control: dict[str, float] = field(default_factory=dict)  # its untrained control's values (same method, variant, stage, seed)
    recipe: dict[str, Any] = field(default_factory=dict)  # training-recipe changes from the profile (config_diff)
    per_query: dict[str, Any] = field(default_factory=dict)  # "R1", "mAP": [Nq] per-query values (verified rows; paired tests)
    split: str = ""  # the annotation checksum of the split the row was scored on (rows pair only on the same split)
    breakdowns: dict[str, Any] = field(default_factory=dict)  # per-attribute buckets of the (re-scored) metrics
    provenance: dict[str, Any] = field(default_factory=dict)  # the submission's provenance block (site)

    @property
    def label(self) -> str:
        base = f"{self.method} ({self.variant})" if self.variant else self.method
        return f"{base}, {self.stage}" if self.stage else base


@dataclass
class Leaderboard:
    tables: dict[tuple[str, str], list[Row]]
    paths: list[Path] = field(default_factory=list)


# --- collecting rows ---------------------------------------------------------------------


def submission_paths(results_dir: Path) -> list[Path]:
    sub_dir = results_dir / SUBMISSIONS_SUBDIR
    if not sub_dir.is_dir():
        return []
    return sorted(p for p in sub_dir.iterdir() if p.is_file() and (p.name.endswith(".json") or p.name.endswith(".json.gz")))


def _dataset_key(ds: Mapping[str, Any]) -> tuple:
    return (ds["name"], ds.get("size"), ds.get("seed"), ds["annotation_checksum"])


def collect_rows(results_dir: Path, load_splits: Optional[LoadSplits] = None,
                 reported_path: Optional[Path] = None) -> list[Row]:
    """Rows of every submission (re-scored when possible) and every reported result."""
    rows: list[Row] = []
    faults: list[str] = []
    cache: dict[tuple, Optional[DatasetSplits]] = {}
    for path in submission_paths(results_dir):
        try:
            sub = load_submission(path)
            key = _dataset_key(sub["dataset"])
            if key not in cache:
                cache[key] = load_splits(sub["dataset"]) if load_splits is not None else None
            splits = cache[key]
            if splits is None:
                rows.append(_row_unverified(sub, path, results_dir))
            else:
                report = rescore(path, splits)
                rows.append(_row_verified(report.submission, report.metrics, report.curve, report.topk, path, results_dir))
                rows[-1].per_query = per_query_values(report.gt_rank, [1], report.topk, full_map=False)
                rows[-1].per_query["mAP"] = rows[-1].per_query.pop(f"mAP@{report.topk}")
        except SubmissionError as exc:
            faults.append(str(exc))
    if reported_path is None:
        reported_path = results_dir / "reported.json"
    if reported_path.exists():
        try:
            rows += load_reported(reported_path)
        except SubmissionError as exc:
            faults.append(str(exc))
    if faults:
        raise LeaderboardError("leaderboard not regenerated:\n" + "\n".join(faults))
    return rows


def _common(sub: Mapping[str, Any], path: Path, results_dir: Path) -> dict[str, Any]:
    prov = sub["provenance"]
    try:
        rel = path.relative_to(results_dir).as_posix()
    except ValueError:
        rel = path.name
    protocol, start = sub.get("protocol", {}), submission_start(sub)
    return dict(
        dataset=sub["dataset"]["name"], profile=sub["profile"]["name"], method=sub["method"]["name"],
        variant=sub["method"]["variant"], source="reproduced", num_parameters=sub["method"]["num_parameters"],
        train_s=_train_seconds(prov, rerank_stage(protocol) is None), date=prov["date"][:10], seed=prov["seed"], path=rel,
        note=_rerank_note(protocol), stage=_stage(protocol, prov, start),
        analysis=is_analysis(sub), start=start, rerank=rerank_stage(protocol),
        recipe={} if start else recipe_changes(sub["profile"]["name"], sub["profile"].get("train") or {}),
        split=str(sub["dataset"].get("annotation_checksum", "")), provenance=dict(prov),
    )


def is_analysis(sub: Mapping[str, Any]) -> bool:
    """A row listed below the ranked ones, unranked: an evaluation of another run's weights
    under changed settings (``--weights``), a variant named ``...oracle...``, which sees
    ground truth at test time (e.g. RICE ``ipd=oracle``: the true boxes in place of the detector),
    or an untrained network (``--epochs 0`` from random weights: the control of its trained row)."""
    return (bool(sub["provenance"].get("initial_weights")) or "oracle" in (sub["method"].get("variant") or "")
            or submission_start(sub) == "untrained")


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


def _rerank_note(protocol: Mapping[str, Any]) -> str:
    """How the row's rankings were made: first-stage embeddings only, or re-ranked."""
    stage = rerank_stage(protocol)
    if stage is None:
        return ""
    if stage == "all":
        return f"re-ranked: second stage scored every pair of the group ({protocol.get('pairs_scored', 0)} pairs)"
    return f"re-ranked: second stage scored the first-stage {stage.replace('top', 'top-')}"


def _row_verified(sub: Mapping[str, Any], metrics: Mapping[str, Any], curve: list[float], topk: int,
                  path: Path, results_dir: Path) -> Row:
    ov = metrics["overall"]
    values = {n: e["value"] for n, e in ov.items() if n.startswith("R")}
    cis = {n: _ci(e) for n, e in ov.items() if n.startswith("R")}
    values["mAP"] = ov[f"mAP@{topk}"]["value"]
    cis["mAP"] = _ci(ov[f"mAP@{topk}"])
    return Row(status="verified", values=values, cis=cis, map_label=f"mAP@{topk}", curve=curve,
               breakdowns=metrics.get("breakdowns", {}), **_common(sub, path, results_dir))


def _row_unverified(sub: Mapping[str, Any], path: Path, results_dir: Path) -> Row:
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
    return Row(status="unverified", values=values, cis=cis, map_label=name or "mAP", breakdowns=m.get("breakdowns", {}), **common)


def _ci(entry: Mapping[str, Any]) -> Optional[tuple[float, float]]:
    ci = entry.get("ci95")
    return (float(ci[0]), float(ci[1])) if ci else None


def load_reported(path: Path) -> list[Row]:
    """Rows of ``reported.json`` (schema ``benchmark/schemas/reported-v1.json``)."""
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
        rows.append(Row(
            dataset=r["dataset"], profile=r["profile"], method=r["method"], variant=r["variant"],
            source="reported", status="reported", values=values, cis={}, map_label=map_label,
            num_parameters=r.get("num_parameters"), date=r.get("date", ""), note=note,
        ))
    return rows


def build(rows: Sequence[Row]) -> Leaderboard:
    """Tables keyed by (dataset, profile), sorted; rows ranked by R1 (missing last), analysis
    rows (:func:`is_analysis`) after all ranked ones."""
    tables: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        tables.setdefault((r.dataset, r.profile), []).append(r)
    for key in tables:
        tables[key].sort(key=lambda r: (r.analysis, -r.values.get("R1", -1.0), r.label, r.status, r.seed if r.seed is not None else -1, r.path))
        _attach_controls(tables[key])
    ordered = {k: tables[k] for k in sorted(tables)}
    return Leaderboard(tables=ordered)


def _attach_controls(rows: Sequence[Row]) -> None:
    """Give each trained row the values of its untrained control: the ``--epochs 0`` evaluation
    of the same method, variant, second stage and seed from random weights, when one is listed.
    A row trained under a changed recipe (``train.epochs-8``) is compared with the control of its
    model: an untrained network trains nothing, so its variant carries no recipe."""
    def key(r: Row) -> tuple:
        return (r.method, strip_recipe(r.variant, r.recipe), r.rerank, r.seed)

    controls = {key(r): dict(r.values) for r in rows if r.start == "untrained"}
    for r in rows:
        if r.start is None and r.source == "reproduced" and not r.analysis:
            r.control = controls.get(key(r), {})


CONTROL_METRICS = ("R1", "R10")  # compared with the untrained control (R10: where R1 is at the floor)


def fmt_control(row: Row, metric: str = "R1", dash: str = DASH) -> str:
    """``metric`` gained over the untrained control; "(n.s.)" when the control's value lies
    inside the trained row's 95% CI, i.e. the training is not shown to have helped."""
    if metric not in row.control or metric not in row.values:
        return dash
    base, ci = row.control[metric], row.cis.get(metric)
    text = f"{row.values[metric] - base:+.2f}"
    return text + " (n.s.)" if ci is not None and ci[0] <= base else text


def fmt_controls(row: Row, dash: str = DASH) -> str:
    """The "R1 / R10 vs untrained" cell."""
    if not row.control:
        return dash
    return " / ".join(fmt_control(row, m, dash) for m in CONTROL_METRICS)


# --- formatting ----------------------------------------------------------------------------


def fmt_value(row: Row, name: str, *, with_ci: bool = True, dash: str = DASH) -> str:
    if name not in row.values:
        return dash
    text = f"{row.values[name]:.2f}"
    ci = row.cis.get(name)
    if with_ci and ci is not None:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def fmt_params(n: Optional[int], dash: str = DASH) -> str:
    if n is None:
        return dash
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def fmt_duration(seconds: Optional[float], dash: str = DASH) -> str:
    if seconds is None:
        return dash
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def _labels(rows: Sequence[Row]) -> list[str]:
    """Method labels, with the seed appended where one method appears with several seeds."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.label] = counts.get(r.label, 0) + 1
    return [f"{r.label}, seed {r.seed}" if counts[r.label] > 1 and r.seed is not None else r.label for r in rows]


def _map_header(rows: Sequence[Row]) -> str:
    labels = {r.map_label for r in rows if "mAP" in r.values}
    if not labels:
        return "mAP"
    return labels.pop() if len(labels) == 1 else "mAP@K"


def table_cells(rows: Sequence[Row], *, dash: str = DASH, note_refs: Optional[Sequence[str]] = None) -> tuple[list[str], list[list[str]]]:
    controls = any(r.start == "untrained" for r in rows)  # the column only where a control is listed
    head = ["#", "Method", *(f"R{k}" for k in SHOWN_KS), _map_header(rows), *(["R1 / R10 vs untrained"] if controls else []),
            "Params", "Train time", "Date", "Source"]
    body = []
    multi_map = head[5] == "mAP@K"
    for i, (r, label) in enumerate(zip(rows, _labels(rows))):
        mp = fmt_value(r, "mAP", with_ci=False, dash=dash)
        if multi_map and "mAP" in r.values:
            mp += f" ({r.map_label})"
        source = "reproduced, verified" if r.status == "verified" else (
            "reproduced, unverified" if r.status == "unverified" else "reported")
        if note_refs is not None and note_refs[i]:
            source += f" {note_refs[i]}"
        body.append([dash if r.analysis else str(i + 1), label, *(fmt_value(r, f"R{k}", dash=dash) for k in SHOWN_KS), mp,
                     *([fmt_controls(r, dash)] if controls else []),
                     fmt_params(r.num_parameters, dash), fmt_duration(r.train_s, dash), r.date or dash, source])
    return head, body


HEADER = """# LPR-Bench leaderboard

Regenerated by `run_benchmark.py leaderboard` from `results/submissions/` and
`results/reported.json`; do not edit by hand.

- R1/R5/R10: hit@k in percent (a query is a hit when any of its ground-truth images is within
  the top k of its own gallery group; every query of the test split counts, a query without
  a prediction is a miss), with 95% percentile-bootstrap confidence intervals over queries.
- mAP@K: mean average precision over the top K ranked items (K = the depth of the saved
  rankings), divided by the number of ground truths; exactly re-scorable from a submission.
- *reproduced, verified*: numbers re-scored from the submission's rankings against the
  ground truth (claimed numbers are never shown). *unverified*: the dataset was not
  available when the table was generated; claimed numbers are shown.
- *reported*: numbers published by a paper or an official repository, under their own
  training data and protocol (see the notes); not re-scored.
- Rows numbered "–" are analysis, not ranked: another run's weights evaluated under changed
  settings ("weights of X", `--weights`), a variant that sees ground truth at test time
  ("oracle"), or a method's untrained network ("untrained", `--epochs 0` from random
  weights: the control its trained row must beat). "zero-shot": pretrained weights, not trained.
- Method (variant): the variant label is the method's own (`Method.variant()`, explained in its
  module docstring), e.g. RICE's ablation ladder `icl+pmd+pfr+ipd+text`, where `pfr-ln` is PFR
  on layer-normalised tokens (the tiny profile's, see `methods/rice.py`) and `pfr` the official
  raw-token loss. A run that changed config fields its variant does not name (`--set k=v`)
  carries them after it, e.g. `video-swin (depths-2_2_2_2)`, or `set-<sha8>` when long; one
  trained under another recipe than the table's (`--epochs`, `--batch-size`, learning rates,
  weight decay) carries `train.<field>-<value>`, e.g. `asymnet (train.epochs-8)`.
- R1 / R10 vs untrained (tables that list untrained controls): a trained row's R1 and R10
  minus those of its untrained control (same method, variant, second stage and seed); "(n.s.)"
  when the control's value lies inside the trained row's 95% CI. R10 shows learning where R1
  is still at the floor (movingfashion-synth's one gallery of 240: chance R1 0.42, R10 4.17).
"""


def render_markdown(board: Leaderboard) -> str:
    out = [HEADER]
    for (dataset, profile), rows in board.tables.items():
        refs, notes = _note_refs(rows)
        head, body = table_cells(rows, note_refs=refs)
        out.append(f"## {dataset} — profile `{profile}`\n")
        out.append(tabulate(body, headers=head, tablefmt="github", disable_numparse=True))
        out.append("")
        plot = plot_filename(dataset, profile)
        out.append(f"Rank-k curves: [plots/{plot}](plots/{plot})\n")
        for ref, text in notes:
            out.append(f"{ref} {text}  ")
        if notes:
            out.append("")
    if not board.tables:
        out.append("No submissions yet.\n")
    return "\n".join(out).rstrip() + "\n"


def _note_refs(rows: Sequence[Row]) -> tuple[list[str], list[tuple[str, str]]]:
    notes: list[tuple[str, str]] = []
    index: dict[str, str] = {}
    refs = []
    for r in rows:
        if not r.note:
            refs.append("")
            continue
        if r.note not in index:
            index[r.note] = f"[{len(index) + 1}]"
            notes.append((index[r.note], r.note))
        refs.append(index[r.note])
    return refs, notes


def _latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "—": "---"}
    return "".join(repl.get(c, c) for c in text)


def render_latex(board: Leaderboard) -> str:
    """One booktabs ``table`` per (dataset, profile); needs ``\\usepackage{booktabs}``."""
    out = ["% LPR-Bench leaderboard, regenerated by `run_benchmark.py leaderboard`; needs \\usepackage{booktabs}", ""]
    for (dataset, profile), rows in board.tables.items():
        refs, notes = _note_refs(rows)
        head, body = table_cells(rows, dash="--", note_refs=refs)
        cols = "r l " + " ".join("r" for _ in head[2:-1]) + " l"
        out.append("\\begin{table}[t]")
        out.append("\\centering\\small")
        caption = _latex_escape(f"LPR-Bench: {dataset}, profile {profile}. R@k in percent with 95% bootstrap CIs.")
        for ref, text in notes:
            caption += " " + _latex_escape(f"{ref} {text}.")
        out.append(f"\\caption{{{caption}}}")
        out.append(f"\\label{{tab:lpr-bench-{_slug(dataset)}-{_slug(profile)}}}")
        out.append(f"\\begin{{tabular}}{{{cols}}}")
        out.append("\\toprule")
        out.append(" & ".join(_latex_escape(h) for h in head) + " \\\\")
        out.append("\\midrule")
        for cells in body:
            out.append(" & ".join(_latex_escape(c) for c in cells) + " \\\\")
        out.append("\\bottomrule")
        out.append("\\end{tabular}")
        out.append("\\end{table}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def plot_filename(dataset: str, profile: str) -> str:
    return f"{_slug(dataset)}__{_slug(profile)}.png"


def render_plot(dataset: str, profile: str, rows: Sequence[Row]) -> bytes:
    """PNG of R@k against k: re-scored curves for verified rows, points for the others."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    max_k = 10
    for r, label in zip(rows, _labels(rows)):
        if r.curve:
            ks = list(range(1, len(r.curve) + 1))
            ax.plot(ks, r.curve, label=f"{label} (verified)", linewidth=1.6)
            max_k = max(max_k, len(r.curve))
        else:
            pts = sorted((int(n[1:]), v) for n, v in r.values.items() if re.fullmatch(r"R\d+", n))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="--", marker="o",
                        label=f"{label} ({r.status})")
                max_k = max(max_k, pts[-1][0])
    ax.set_xscale("log")
    ax.set_xlim(0.9, max_k * 1.1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("k")
    ax.set_ylabel("R@k (%)")
    ax.set_title(f"{dataset}, profile {profile}")
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# --- regeneration ------------------------------------------------------------------------------


def regenerate(results_dir: Path | str = "results", *, load_splits: Optional[LoadSplits] = None,
               reported_path: Optional[Path] = None, plots: bool = True) -> Leaderboard:
    """Re-score and re-render everything; on any invalid input nothing is written.

    ``load_splits(dataset_block)`` gets a submission's ``dataset`` dict (name, size, seed,
    annotation checksum, ...) and returns the splits, or ``None`` when the dataset is not
    available (the row is then marked unverified). See :func:`registry_loader`.
    """
    results_dir = Path(results_dir)
    board = build(collect_rows(results_dir, load_splits, reported_path))
    outputs: list[tuple[Path, bytes]] = [
        (results_dir / "leaderboard.md", render_markdown(board).encode("utf-8")),
        (results_dir / "leaderboard.tex", render_latex(board).encode("utf-8")),
    ]
    plot_dir = results_dir / "plots"
    if plots:
        for (dataset, profile), rows in board.tables.items():
            outputs.append((plot_dir / plot_filename(dataset, profile), render_plot(dataset, profile, rows)))
    for path, data in outputs:  # everything rendered before the first write
        atomic_write_bytes(path, data)
    if plots and plot_dir.is_dir():
        keep = {p.name for p, _ in outputs}
        for stale in plot_dir.glob("*__*.png"):
            if stale.name not in keep:
                stale.unlink()
    board.paths = [p for p, _ in outputs]
    return board


def registry_loader(data_roots: Optional[Mapping[str, Path]] = None) -> LoadSplits:
    """A ``load_splits`` for :func:`regenerate` backed by the ``DATASETS`` registry.

    A dataset named in ``data_roots`` is loaded from there; otherwise the loader is called
    with no data root and the submission's generator ``size``/``seed``, which synthetic
    datasets satisfy (generated into the cache) and real ones refuse with ``DataError``:
    the row is then unverified.
    """
    from benchmark.registry import DATASETS, RegistryError, load_builtin_datasets
    from datasets.errors import DataError

    load_builtin_datasets()
    roots = dict(data_roots or {})

    def load(ds: Mapping[str, Any]) -> Optional[DatasetSplits]:
        try:
            loader = DATASETS.get(ds["name"])
        except RegistryError:
            return None
        kwargs: dict[str, Any] = {}
        if ds.get("size") is not None:
            kwargs["size"] = ds["size"]
        if ds.get("seed") is not None:
            kwargs["seed"] = ds["seed"]
        root = roots.get(ds["name"])
        if root is None:
            try:
                return loader(None, **kwargs)
            except DataError:
                return None
        return loader(Path(root), **kwargs)

    return load


# --- terminal --------------------------------------------------------------------------------


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
