"""The ``evaluate`` and ``export`` subcommands: a model's outputs in, TREC files out.

``evaluate`` scores embeddings or a TREC run file made outside the harness
(:mod:`benchmark.evaluation.external`), writes an external submission
(:mod:`benchmark.record.external`) and regenerates the leaderboard; ``export`` writes a
dataset's qrels and submissions' rankings as TREC files (:mod:`benchmark.record.trec`).
docs/external.md describes the formats, the rules and a worked example. The handlers import
what they use when they run (torch, rich, the datasets: heavy), so that ``--help`` and a
mistake in the command line answer at once; those imports are marked ``noqa: PLC0415``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

from benchmark.record.rescore import rescore

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")  # the submission schema's method name
LINK = re.compile(r"^(https?://\S+|doi:\S+)$")


class ArgumentProblem(ValueError):
    """A bad combination of ``evaluate`` arguments (the caller reports it as a usage error)."""


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="a registered dataset (see `list`)")
    p.add_argument(
        "--data-root", type=Path, default=None, help="dataset folder (synthetic sets: generated when absent)"
    )
    p.add_argument(
        "--synth-size", default="default", choices=("tiny", "default"), help="a generated synthetic set's size"
    )
    p.add_argument(
        "--query-embeddings",
        type=Path,
        default=None,
        metavar="FILE",
        help=".npz (ids + embeddings), .npy or .safetensors",
    )
    p.add_argument("--gallery-embeddings", type=Path, default=None, metavar="FILE", help="as --query-embeddings")
    p.add_argument(
        "--query-ids",
        type=Path,
        default=None,
        metavar="FILE",
        help="id list of a .npy/.safetensors file (default: beside it, query.npy -> query.ids.txt)",
    )
    p.add_argument("--gallery-ids", type=Path, default=None, metavar="FILE", help="as --query-ids")
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        metavar="FILE",
        help="a TREC run file (qid Q0 docid rank score tag) instead of embeddings",
    )
    p.add_argument("--method-name", required=True, help="the method's name on the leaderboard")
    p.add_argument("--paper", required=True, metavar="URL", help="a link to its paper or code (http(s):// or doi:)")
    p.add_argument(
        "--recipe", required=True, metavar="TEXT", help="how it was trained and the outputs made (free text)"
    )
    p.add_argument("--num-parameters", type=int, default=None, help="the model's parameter count, if you want it shown")
    p.add_argument("--profile", default="tiny", help="the leaderboard table to join; its evaluation settings apply")
    p.add_argument(
        "--seed", type=int, default=0, help="your run's seed: names the file, seeds the bootstrap (default 0)"
    )
    p.add_argument(
        "--results-dir", type=Path, default=Path("results"), help="submissions and leaderboard (default results/)"
    )
    p.add_argument("--no-leaderboard", action="store_true", help="write the submission but leave the leaderboard alone")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("submissions", type=Path, nargs="+", metavar="SUBMISSION")
    p.add_argument("--out", type=Path, required=True, help="folder for the .qrels and .run files")
    p.add_argument("--data-root", type=Path, default=None, help="the dataset's folder (synthetic sets: regenerated)")


def _check_arguments(args: argparse.Namespace) -> str:
    """The input kind ("embeddings" or "run"), or :class:`ArgumentProblem`."""
    emb = args.query_embeddings is not None or args.gallery_embeddings is not None
    if emb == (args.run is not None):
        raise ArgumentProblem("give either --query-embeddings and --gallery-embeddings, or --run (one of the two)")
    if emb and (args.query_embeddings is None or args.gallery_embeddings is None):
        raise ArgumentProblem("--query-embeddings and --gallery-embeddings go together")
    if not emb and (args.query_ids or args.gallery_ids):
        raise ArgumentProblem("--query-ids/--gallery-ids are for embedding files, not --run")
    if not NAME.match(args.method_name):
        raise ArgumentProblem(f"--method-name {args.method_name!r}: letters, digits and . _ + - only (at most 100)")
    if not LINK.match(args.paper) or len(args.paper) > 500:
        raise ArgumentProblem(f"--paper {args.paper!r}: give a link to the paper or code (http(s)://... or doi:...)")
    if not args.recipe.strip() or len(args.recipe) > 4000:
        raise ArgumentProblem("--recipe: say how the model was trained and its outputs made (1 to 4000 characters)")
    if args.num_parameters is not None and args.num_parameters < 0:
        raise ArgumentProblem(f"--num-parameters must be >= 0, got {args.num_parameters}")
    return "embeddings" if emb else "run"


def _load_splits(dataset: str, data_root: Optional[Path], size: str):
    from benchmark.cli.run_setup import SYNTH_DATA_SEED  # noqa: PLC0415
    from benchmark.core.registry import DATASETS, load_builtin_datasets  # noqa: PLC0415

    load_builtin_datasets()
    loader = DATASETS.get(dataset)
    if data_root is not None:
        return loader(Path(data_root)), None, None
    return loader(None, size=size, seed=SYNTH_DATA_SEED), size, SYNTH_DATA_SEED


def evaluate_command(args: argparse.Namespace) -> int:
    """``evaluate``: outside outputs -> an external submission -> the leaderboard."""
    from rich.console import Console  # noqa: PLC0415

    from benchmark.core.config import get_profile  # noqa: PLC0415
    from benchmark.evaluation import external, scoring  # noqa: PLC0415
    from benchmark.evaluation import external_inputs as xin  # noqa: PLC0415
    from benchmark.record.external import build_external_submission, write_external  # noqa: PLC0415
    from benchmark.reports import publish  # noqa: PLC0415
    from benchmark.reports.terminal_tables import print_run_table  # noqa: PLC0415

    kind = _check_arguments(args)
    try:
        eval_cfg = get_profile(args.profile).eval
    except KeyError as exc:
        raise ArgumentProblem(str(exc.args[0])) from None
    t0 = time.perf_counter()
    if kind == "embeddings":  # read (and check) the files before any dataset is loaded or generated
        q = xin.read_embeddings(args.query_embeddings, args.query_ids)
        g = xin.read_embeddings(args.gallery_embeddings, args.gallery_ids)
        inputs = dict(zip(("query_embeddings", "query_ids"), q.files)) | dict(
            zip(("gallery_embeddings", "gallery_ids"), g.files)
        )
    else:
        entries = xin.read_run(args.run)
        inputs = {"run": args.run}
    splits, size, data_seed = _load_splits(args.dataset, args.data_root, args.synth_size)
    out = (
        external.rank_embeddings(splits, q, g, eval_cfg)
        if kind == "embeddings"
        else external.rank_run(splits, entries, args.run, eval_cfg)
    )
    metrics = scoring.metrics_for_ranking(out.ranking, out.index, eval_cfg, seed=args.seed)
    sub = build_external_submission(
        method=args.method_name,
        paper=args.paper,
        recipe=args.recipe,
        kind=kind,
        inputs=inputs,
        dataset=args.dataset,
        splits=splits,
        eval_cfg=eval_cfg,
        profile=args.profile,
        metrics=metrics,
        rankings=scoring.ranked_ids(out.ranking, out.index, eval_cfg.topk_saved),
        seed=args.seed,
        wall_time_s={"score": time.perf_counter() - t0},
        num_parameters=args.num_parameters,
        dataset_size=size,
        dataset_seed=data_seed,
    )
    path, written = write_external(sub, args.results_dir)
    con = Console(highlight=False)
    if out.notice:
        print(f"notice: {out.notice}", file=sys.stderr)
    print_run_table(metrics, con, title=f"{args.method_name} (external {kind}), {args.dataset} test split")
    print(
        f"submission: {path}" + ("" if written else " (already there, made from the same input files: left as it was)")
    )
    if not args.no_leaderboard:
        _refresh_board(publish, args, splits, con)
    return 0


def _refresh_board(publish: Any, args: argparse.Namespace, splits: Any, con: Any) -> None:
    from benchmark.reports.leaderboard import LeaderboardError  # noqa: PLC0415

    roots = {args.dataset: Path(args.data_root)} if args.data_root is not None else None
    try:
        board = publish.regenerate_leaderboard(args.results_dir, splits=splits, data_roots=roots)
    except LeaderboardError as exc:
        print(f"warning: the submission was written; leaderboard left as it was: {exc}", file=sys.stderr)
        return
    for table in publish.rich_tables(board, only=(args.dataset, args.profile)):
        con.print(table)
    if board.skipped:
        print(f"warning: leaderboard {publish.skipped_message(board.skipped)}", file=sys.stderr)


def export_command(args: argparse.Namespace) -> int:
    """``export``: each submission re-scored (its rankings checked), then its run and its
    dataset's qrels written as TREC files."""
    from benchmark.evaluation.scoring import SplitIndex  # noqa: PLC0415
    from benchmark.record import submission, trec  # noqa: PLC0415
    from benchmark.reports import publish  # noqa: PLC0415

    cache: dict[tuple, Any] = {}
    for path in args.submissions:
        sub = submission.load_submission(path)
        key = (sub["dataset"]["name"], sub["dataset"]["annotation_checksum"])
        if key not in cache:
            splits = publish.splits_for_submission(sub, args.data_root)
            cache[key] = (splits, SplitIndex.from_splits(splits))
        splits, index = cache[key]
        rescore(path, splits, loaded=sub)
        qrels, run = trec.export(sub, path, index, args.out)
        print(f"{path}: wrote {run} ({sum(len(ids) for _, ids in sub['rankings'])} lines) and {qrels}")
    print(
        "recompute with ranx: Qrels.from_file(QRELS, kind='trec'), Run.from_file(RUN, kind='trec'), "
        "evaluate(qrels, run, ['hit_rate@1', 'map@50'], make_comparable=True); see docs/external.md"
    )
    return 0
