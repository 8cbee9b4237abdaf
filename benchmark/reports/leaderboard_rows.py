"""The leaderboard's rows: what each submission (and each reported number) becomes, re-scored.

See :mod:`benchmark.reports.leaderboard` for how rows are collected, which are ranked and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from benchmark.core import safe_json
from benchmark.record import collect, rescore_cache
from benchmark.record.config_diff import recipe_changes
from benchmark.record.record import Submission
from benchmark.record.submission import (
    SUBMISSIONS_SUBDIR,
    SubmissionError,
    rerank_stage,
    schema_errors,
    submission_start,
)
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
