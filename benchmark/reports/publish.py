"""From an evaluation to results: metrics, the submission file, the leaderboard; re-scoring.

:func:`publish` is the runner's last step (rank 0 only): metrics from the ranking
(:func:`benchmark.evaluation.scoring.metrics_for_ranking`), the top-k id lists, a schema-checked
submission (:mod:`benchmark.record.submission`) written atomically under
``<results_dir>/submissions/`` (a run's default is the user's ``runs/results/``, never the
committed ``results/``), then the leaderboard regenerated from every submission there, and
the run compared with the committed row of the same name (:func:`committed_comparison`). :func:`score_command` and :func:`leaderboard_command` back the ``score`` and
``leaderboard`` subcommands.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console

from benchmark.core.config import RunConfig
from benchmark.core.jsonable import to_jsonable
from benchmark.core.paths import REPO_ROOT
from benchmark.core.registry import DATASETS, load_builtin_datasets
from benchmark.evaluation import scoring
from benchmark.evaluation.evaluate import EvalOutput
from benchmark.record import run_identity, submission
from benchmark.record.record import Submission
from benchmark.record.rescore import rescore
from benchmark.reports import leaderboard
from benchmark.reports.leaderboard import LeaderboardError
from benchmark.reports.terminal_tables import compare_lines, find_row
from benchmark.reports.terminal_tables import rich_tables as narrow
from datasets.records import DatasetSplits
from datasets.synthetic.loaders import load_recorded
from methods.base import Method

COMMITTED_RESULTS = REPO_ROOT / "results"  # the committed record (its submissions, leaderboard and site)


@dataclass
class Published:
    metrics: dict[str, Any]
    submission_path: Path
    table: Optional[Any] = None  # a renderable leaderboard table (rich), if regenerated
    leaderboard_error: Optional[str] = None  # why the leaderboard was left as it was (other submissions' faults)
    committed: Optional[str] = None  # how it compares with the committed row of the same name (committed_comparison)


def score_description(method_name: str, rerank: str, topk: int) -> str:
    if rerank == "none":
        return "cosine similarity of L2-normalised embeddings"
    if rerank == "all":
        return f"{method_name} second-stage score of every (query, gallery) pair of the group"
    return f"{method_name} second-stage score of the first-stage top-{topk}, cosine order below"


def publish(
    cfg: RunConfig,
    splits: DatasetSplits,
    method: Method,
    variant: str,
    out: EvalOutput,
    *,
    train_result: Any,
    provenance: dict[str, Any],
    seeds: dict[str, Any],
    timings: dict[str, float],
    run_dir: Path,
    synthetic_seed: Optional[int] = None,
    write_leaderboard: bool = True,
    initial_weights: Optional[dict[str, Any]] = None,
    identity: Optional[dict[str, Any]] = None,
    overwrite: bool = False,
    weights_files: Optional[dict[str, Any]] = None,
) -> Published:
    """Write the run's submission (and refresh the leaderboard); return what was written.

    ``identity`` (:func:`benchmark.cli.run_setup.identity_for`) is recorded in the provenance; an
    existing submission of another identity under the same name is not replaced unless
    ``overwrite`` (:func:`benchmark.record.run_identity.check_target`). ``weights_files``: the files
    the method config names, hashed (:func:`benchmark.record.provenance.config_files`)."""

    ev = cfg.profile.eval
    metrics = scoring.metrics_for_ranking(out.ranking, out.index, ev, seed=cfg.seed)
    rankings = scoring.ranked_ids(out.ranking, out.index, ev.topk_saved)
    method_cfg = dataclasses.asdict(method.cfg) if dataclasses.is_dataclass(method.cfg) else None
    prov = dict(provenance)
    prov["run_dir"] = str(run_dir)
    prov["seeds"] = seeds
    if train_result is not None:
        prov["training"] = train_result.to_dict()
    if initial_weights is not None:
        prov["initial_weights"] = dict(initial_weights)
    if weights_files:
        prov["weights_files"] = dict(weights_files)
    if identity is not None:
        prov["identity"] = dict(identity)
    if out.inference:
        prov["inference"] = dict(out.inference)
    synthetic = cfg.data_root is None and synthetic_seed is not None
    sub = submission.build_submission(
        method=cfg.method,
        variant=variant,  # the method's, plus the --set changes it does not name (run_setup.run_variant)
        method_config=method_cfg,
        num_parameters=method.num_parameters(),
        dataset=cfg.dataset,
        splits=splits,
        profile=cfg.profile,
        metrics=metrics,
        rankings=rankings,
        provenance=prov,
        seed=cfg.seed,
        wall_time_s={k.removesuffix("_s"): float(v) for k, v in timings.items()},
        rerank=out.rerank,
        pairs_scored=int(out.ranking.pairs_scored),
        score=score_description(cfg.method, out.rerank, ev.rerank_topk),
        dataset_size=cfg.synth_size if synthetic else None,
        dataset_seed=synthetic_seed if synthetic else None,
    )
    run_identity.check_target(target_path(sub, cfg.results_dir), run_identity.comparable(sub), overwrite=overwrite)
    path = submission.write_submission(sub, cfg.results_dir)
    table, board_error = None, None
    if write_leaderboard:
        roots = {cfg.dataset: Path(cfg.data_root)} if cfg.data_root is not None else None
        try:
            board = regenerate_leaderboard(cfg.results_dir, splits=splits, data_roots=roots)
        except LeaderboardError as exc:  # another submission is at fault; this run's stands
            board_error = f"left as it was: {exc}"
        else:
            tables = rich_tables(
                board, only=(cfg.dataset, cfg.profile.name), where=str(Path(cfg.results_dir) / "leaderboard.md")
            )
            table = tables[0] if tables else None
            if board.skipped:
                board_error = skipped_message(board.skipped)
    return Published(
        metrics=metrics,
        submission_path=path,
        table=table,
        leaderboard_error=board_error,
        committed=committed_comparison(sub, cfg.results_dir),
    )


def committed_comparison(sub: Submission, results_dir: Path, committed_dir: Path = COMMITTED_RESULTS) -> Optional[str]:
    """One line on how a run (``sub``, written under ``results_dir``) compares with the committed
    submission of the same name in ``committed_dir``: "exact" (the same rankings), "within" or
    "outside" the committed row's 95% R1 interval, and whether the committed run records another
    identity (:func:`benchmark.record.run_identity.differences`). None when there is no such row or
    the run was written into the committed folder itself."""

    target = target_path(sub, committed_dir)
    found = [p for p in (target, target.with_name(target.name + ".gz")) if p.is_file()]
    if not found or Path(results_dir).resolve() == Path(committed_dir).resolve():
        return None
    try:
        old = submission.load_submission(found[0])
    except submission.SubmissionError as exc:
        return f"committed row {found[0]}: cannot be read ({str(exc).splitlines()[0][:200]})"
    new_r1, old_e = sub["metrics"]["overall"]["R1"]["value"], old["metrics"]["overall"]["R1"]
    ci = old_e.get("ci95")
    if old["rankings"] == sub["rankings"]:
        verdict = "exact: the same rankings"
    elif ci and ci[0] <= new_r1 <= ci[1]:
        verdict = "within the committed row's 95% interval"
    else:
        verdict = "outside the committed row's 95% interval" if ci else "differs (the committed row has no interval)"
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    diffs = run_identity.differences(run_identity.comparable(sub), run_identity.comparable(old))
    other = f"; the committed run records another identity: {'; '.join(diffs[:3])}" if diffs else "; same run identity"
    return (
        f"committed row {found[0].relative_to(committed_dir.parent) if committed_dir.is_absolute() else found[0]}: "
        f"R1 {old_e['value']:.2f}{interval}; this run {new_r1:.2f}: {verdict}{other}"
    )


def preview_submission(
    cfg: RunConfig,
    splits: DatasetSplits,
    method: Method,
    variant: str,
    identity: dict[str, Any],
    *,
    trains: bool,
    initial_weights: Optional[dict[str, Any]],
    synthetic_seed: Optional[int],
    weights_files: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The fields of the run's future submission that name its file and make its identity
    (:func:`benchmark.record.run_identity.comparable`), known before training."""
    synthetic = cfg.data_root is None and synthetic_seed is not None
    ev = cfg.profile.eval
    prov: dict[str, Any] = {"seed": int(cfg.seed), "identity": identity, "training": {} if trains else None}
    if initial_weights is not None:
        prov["initial_weights"] = dict(initial_weights)
    if weights_files:
        prov["weights_files"] = dict(weights_files)
    return {
        "method": {
            "name": cfg.method,
            "variant": variant or "",
            "config": to_jsonable(method.cfg if dataclasses.is_dataclass(method.cfg) else None),
        },
        "dataset": {
            "name": cfg.dataset,
            "annotation_checksum": splits.annotation_checksum,
            "size": cfg.synth_size if synthetic else None,
            "seed": synthetic_seed if synthetic else None,
        },
        "profile": {
            "name": cfg.profile.name,
            **to_jsonable({"data": cfg.profile.data, "train": cfg.profile.train, "eval": ev}),
        },
        "protocol": {"rerank": ev.rerank, "rerank_topk": int(ev.rerank_topk)},
        "provenance": prov,
    }


def target_path(sub: Submission, results_dir: Path) -> Path:
    """Where :func:`benchmark.record.submission.write_submission` puts ``sub`` (``.json``; a ``.gz``
    beside it is the same submission, compressed)."""
    return Path(results_dir) / submission.SUBMISSIONS_SUBDIR / submission.submission_filename(sub)


def skipped_message(skipped: list[tuple[str, str]]) -> str:
    """One line: how many files the leaderboard left out, and the first one's fault."""
    path, why = skipped[0]
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    return f"regenerated without {len(skipped)} file(s): {path}: {why}{more}"


# --- leaderboard -------------------------------------------------------------------------


def regenerate_leaderboard(
    results_dir: Path, *, splits: Optional[DatasetSplits] = None, data_roots: Optional[dict[str, Path]] = None
):
    """Rebuild the leaderboard files from every submission under ``results_dir``.

    Submissions are re-scored against their datasets: ``splits`` (already in memory) for the
    dataset it matches, else :func:`benchmark.reports.leaderboard.registry_loader` (``data_roots``
    for real datasets, regeneration for synthetic ones).
    """

    base = leaderboard.registry_loader(data_roots)

    def load(ds: dict[str, Any]) -> Optional[DatasetSplits]:
        if splits is not None and ds["name"] == splits.name and ds["annotation_checksum"] == splits.annotation_checksum:
            return splits
        return base(ds)

    return leaderboard.regenerate(Path(results_dir), load_splits=load)


def rich_tables(board: Any, only: Optional[tuple[str, str]] = None, where: str = "results/leaderboard.md") -> list[Any]:
    """The leaderboard's ranked rows (or those of ``only`` = (dataset, profile)) as narrow rich tables."""

    return narrow(board, only, where)


def leaderboard_command(
    results_dir: Path,
    data_roots: Optional[dict[str, Path]] = None,
    compare: Optional[Sequence[str]] = None,
    dataset: Optional[str] = None,
) -> int:
    """Regenerate and print the leaderboard; with ``compare`` only test two rows (nothing written)."""

    con = Console(highlight=False)
    if compare:
        try:
            for line in compare_only(results_dir, compare[0], compare[1], dataset, data_roots):
                con.print(line)
        except submission.SubmissionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    board = regenerate_leaderboard(results_dir, data_roots=data_roots)
    for table in rich_tables(board, where=str(Path(results_dir) / "leaderboard.md")):
        con.print(table)
    if not board.tables:
        con.print("no submissions yet")
    con.print("wrote " + ", ".join(str(p) for p in board.paths))
    for path, why in board.skipped:
        print(f"skipped: {path}: {why}", file=sys.stderr)
    if board.skipped:
        print(
            f"error: {len(board.skipped)} file(s) skipped (listed above); the leaderboard was regenerated without them",
            file=sys.stderr,
        )
        return 1
    return 0


def compare_only(
    results_dir: Path,
    a: str,
    b: str,
    dataset: Optional[str] = None,
    data_roots: Optional[dict[str, Path]] = None,
    load_splits: Optional[Any] = None,
) -> list[str]:
    """The ``--compare A B`` lines, writing no file: the two rows are first found among the claimed
    rows (no dataset loaded, so a bad or ambiguous name fails at once), then only their dataset's
    submissions are re-scored (``load_splits``: as :func:`benchmark.reports.leaderboard.regenerate`'s,
    default the registry's)."""

    claimed = leaderboard.build(leaderboard.collect_rows(Path(results_dir), None, skipped=[]))
    (key, _), (other, _) = find_row(claimed, a, dataset), find_row(claimed, b, dataset)
    if key != other:
        raise submission.SubmissionError(f"--compare: {a!r} and {b!r} are in different tables ({key} vs {other})")
    rows = leaderboard.collect_rows(
        Path(results_dir),
        load_splits or leaderboard.registry_loader(data_roots),
        skipped=[],
        keep=lambda sub: sub["dataset"]["name"] == key[0],
    )
    return compare_lines(leaderboard.build(rows), a, b, key[0])


# --- re-scoring --------------------------------------------------------------------------


def splits_for_submission(sub: Submission, data_root: Optional[Path]) -> DatasetSplits:
    """The dataset a submission was made on: ``data_root``, or a regenerated synthetic set."""

    load_builtin_datasets()
    ds = sub["dataset"]
    loader = DATASETS.get(ds["name"])
    if data_root is None and ds.get("size") is None:
        raise submission.SubmissionError(
            f"dataset {ds['name']!r} is not a generated synthetic set: pass --data-root pointing at it"
        )
    if data_root is None:
        return load_recorded(
            ds["name"], size=ds["size"], seed=int(ds.get("seed") or 0), checksum=ds.get("annotation_checksum")
        )
    return loader(Path(data_root))


def score_command(path: Path, data_root: Optional[Path]) -> int:
    """Re-score ``path`` against the ground truth; 0 when every claim checks out."""
    sub = submission.load_submission(path)
    splits = splits_for_submission(sub, data_root)
    report = rescore(path, splits)
    print(report.summary())
    return 0
