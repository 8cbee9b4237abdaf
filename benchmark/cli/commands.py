"""The subcommands, each declared once: its name, help line, arguments and handler.

``main`` builds the parser and dispatches from :data:`COMMANDS`; nothing else lists them.
Handlers stay thin: they call into ``benchmark``/``datasets`` and print one summary.
Heavy modules (torch models, img2dataset, rich) are imported inside the handler that needs
them, so ``--help`` and mistakes in the command line answer without loading them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from benchmark.cli import external
from benchmark.cli.args import (
    UsageError,
    add_plugin_argument,
    add_run_arguments,
    check_data_roots,
    load_registries,
    message,
    parse_knobs,
    parse_overrides,
    resolve_run_config,
)


@dataclass(frozen=True)
class Command:
    """One subcommand: ``run_benchmark.py NAME ...``."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    # False: the arguments are added only when this command is the one run (they import heavy modules)
    eager: bool = True


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.cli.runner import run

    load_registries(args.plugins)
    cfg = resolve_run_config(args)
    result = run(cfg, num_workers=args.num_workers, write_leaderboard=not args.no_leaderboard, overwrite=args.overwrite)
    if result.metrics is not None:
        _print_run_summary(result)
    return 0


def _print_run_summary(result) -> None:
    from rich.console import Console

    from benchmark.reports.leaderboard import print_run_table

    con = Console(highlight=False)
    print_run_table(result.metrics, con, title=f"{result.method_name}, test split")
    inf = result.evaluation.inference if result.evaluation is not None else {}
    if inf:
        rate = (
            f"{inf['queries_per_s']} queries/s"
            if inf["queries_per_s"] is not None
            else "queries/s not measured (cached features)"
        )
        con.print(
            f"inference: {rate} ({inf['queries']} queries, {inf['pairs_scored']} pairs re-scored, "
            f"{inf['threads']} threads)"
        )
    missing = int((~result.evaluation.index.valid).sum()) if result.evaluation is not None else 0
    if missing:
        con.print(
            f"{missing} queries have no frames in the release: counted as misses (submission: "
            "dataset.num_queries_without_frames)"
        )
    if result.leaderboard_table is not None:
        con.print(result.leaderboard_table)
    if result.submission_path is not None:
        con.print(f"submission: {result.submission_path}")
    if result.committed:
        con.print(result.committed)
    if result.leaderboard_error:
        print(f"warning: this run's submission was written; leaderboard: {result.leaderboard_error}", file=sys.stderr)
    con.print(f"run directory: {result.run_dir}")


def _list_arguments(p: argparse.ArgumentParser) -> None:
    add_plugin_argument(p)


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.core.config import PROFILES
    from benchmark.core.registry import DATASETS, METHODS

    load_registries(args.plugins)
    sections = [
        ("Methods", [(e.name, e.description) for e in METHODS]),
        ("Datasets", [(e.name, e.description) for e in DATASETS]),
        ("Profiles", [(p.name, p.description) for p in PROFILES.values()]),
    ]
    print_tables(sections)
    return 0


def print_tables(sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
    """Rich tables on a terminal, GitHub-style tabulate tables otherwise (greppable)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        con = Console()
        for title, rows in sections:
            table = Table(title=title, title_justify="left")
            table.add_column("name", style="bold")
            table.add_column("description")
            for name, desc in rows:
                table.add_row(name, desc)
            con.print(table)
        return
    from tabulate import tabulate

    for i, (title, rows) in enumerate(sections):
        if i:
            print()
        print(f"{title}:")
        print(tabulate(rows, headers=["name", "description"], tablefmt="github"))


def _check_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="lpr4m, movingfashion (or a -synth variant)")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--deep", action="store_true", help="decode every image and open every video")


def cmd_check_data(args: argparse.Namespace) -> int:
    from datasets.check import check_dataset

    try:
        report = check_dataset(args.dataset, args.data_root, deep=args.deep)
    except ValueError as exc:  # unknown dataset name
        raise UsageError(message(exc)) from None
    print(report.format())
    return 0 if report.ok else 1


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", required=True, choices=("lpr4m", "movingfashion"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="default", help="tiny | default | lpr4m-scale (annotations only)")
    p.add_argument(
        "--set",
        dest="knobs",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="a difficulty knob of the generator (repeatable)",
    )
    p.add_argument(
        "--release",
        action="store_true",
        help="lpr4m: also write the release as the authors ship it to OUT-release (urls/: four URL lists and "
        "annotation files; www/: the files the URLs name), for `prepare`",
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000/", help="--release: the URLs' prefix")
    p.add_argument(
        "--original-size",
        default=None,
        metavar="WxH",
        help="--release: write frames at this original size, boxes in its pixels (e.g. 144x256)",
    )


def cmd_synth(args: argparse.Namespace) -> int:
    from datasets.synthetic import generate
    from datasets.synthetic.knobs import get_size, knobs_from_dict

    try:
        knobs = knobs_from_dict(parse_knobs(args.knobs))
        get_size(args.size)
    except (ValueError, TypeError) as exc:
        raise UsageError(message(exc)) from None
    try:
        out = generate(args.layout, args.out, seed=args.seed, size=args.size, knobs=knobs)
    except FileExistsError as exc:  # --out is a folder of something else: never written over
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote a synthetic {args.layout} dataset (size {args.size}, seed {args.seed}) to {out}")
    if args.release:
        return _synth_release(args, out)
    return 0


def _synth_release(args: argparse.Namespace, root: Path) -> int:
    from datasets.synthetic.release import write_release

    if args.layout != "lpr4m":
        raise UsageError("--release is for --layout lpr4m")
    size = None
    if args.original_size:
        try:
            w, h = (int(v) for v in args.original_size.lower().split("x"))
        except ValueError:
            raise UsageError(f"--original-size {args.original_size!r}: expected WxH, e.g. 144x256") from None
        size = (w, h)
    dest = Path(args.out).with_name(Path(args.out).name + "-release")
    counts = write_release(root, dest, base_url=args.base_url, original_size=size)
    print(f"wrote its release to {dest} (urls/, www/): {counts}")
    return 0


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=("lpr4m",))
    p.add_argument("--urls", type=Path, required=True, help="folder with the four URL lists and the annotation files")
    p.add_argument("--out", type=Path, required=True, help="the data root to make (resumable: rerun to continue)")
    p.add_argument("--lists", choices=("all", "test"), default="all", help="test: only the two test lists")
    p.add_argument("--processes", type=int, default=4, help="img2dataset processes, and layout threads")
    p.add_argument("--threads", type=int, default=64, help="img2dataset threads per process")
    p.add_argument("--shard-size", type=int, default=50000, help="img2dataset samples per shard (README: 50000)")
    p.add_argument("--link", action="store_true", help="hard-link shard files into the layout (default: rename)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="no HTTP: resize the release's own files (URLS/../www, a synthetic release) as img2dataset does",
    )
    p.add_argument(
        "--frames-per-clip",
        type=int,
        default=10,
        metavar="T",
        help="download only the frames read at T frames a clip (linspace; datasets/frame_selection.py); "
        "0: every frame (default 10, the paper profile's)",
    )
    p.add_argument(
        "--format",
        dest="storage",
        choices=("files", "webdataset"),
        default="files",
        help="files: frames/<clip>/<frame>.jpg (small roots); webdataset: keep img2dataset's tar shards "
        "+ shards/index.tsv (full scale)",
    )


def cmd_prepare(args: argparse.Namespace) -> int:
    from datasets.prepare_lpr4m import PrepareError, prepare

    try:
        result = prepare(
            args.urls,
            args.out,
            which=args.lists,
            processes=args.processes,
            threads=args.threads,
            shard_size=args.shard_size,
            link=args.link,
            fast=args.fast,
            frames_per_clip=args.frames_per_clip,
            fmt=args.storage,
        )
    except PrepareError as exc:
        for line in str(exc).splitlines():  # the checks before any download: one line per fault
            print(f"error: {line}", file=sys.stderr)
        return 1
    rep = result.report
    for name, c in rep["lists"].items():
        listed = f" (of {c['listed']} listed: --frames-per-clip {rep['frames_per_clip']})" if "listed" in c else ""
        print(f"{name}: {c['downloaded']}/{c['urls']} downloaded{listed}, {c['failed']} failed")
    print(
        f"test clips without frames: {len(rep['test_clips_without_frames'])}, gallery images missing: "
        f"{len(rep['gallery_images_missing'])}; report: {result.out / 'prepare_report.json'}"
    )
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    return 0


def _score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("submission", type=Path)
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="the dataset's folder (synthetic sets: regenerated into the cache when absent)",
    )


def cmd_score(args: argparse.Namespace) -> int:
    from benchmark.reports import publish

    return publish.score_command(args.submission, args.data_root)


def _leaderboard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument(
        "--data-root",
        dest="data_roots",
        action="append",
        default=[],
        metavar="DATASET=DIR",
        help="where a real dataset lives, so that its rows are re-scored (repeatable); synthetic ones are regenerated",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="only print the seed-aware test of two rows (submission file name or row label); writes nothing",
    )
    p.add_argument("--dataset", default=None, help="--compare: look the rows up in this dataset's tables")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.reports import publish

    roots = {k: Path(v) for k, v in parse_overrides(args.data_roots, "--data-root").items()}
    check_data_roots(roots)
    return publish.leaderboard_command(args.results_dir, roots or None, compare=args.compare, dataset=args.dataset)


def _reproduce_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("submission", type=Path)
    p.add_argument("--data-root", type=Path, default=None, help="the dataset's folder (synthetic sets: regenerated)")
    p.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (worktree removed) and its submission"
    )
    p.add_argument(
        "--apply-recorded-diff",
        action="store_true",
        help="a dirty tree's row: apply its recorded diff (it is code: read it first) when its hash "
        "matches and its paths stay in the worktree; default: run nothing, exit 3",
    )


def cmd_reproduce(args: argparse.Namespace) -> int:
    from benchmark.record.reproduce import reproduce_command

    return reproduce_command(args.submission, args.data_root, keep=args.keep, apply_diff=args.apply_recorded_diff)


def _browse_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("submission", type=Path)
    p.add_argument("--data-root", type=Path, default=None, help="the dataset's folder (synthetic sets: regenerated)")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/browse/<submission>; never commit it)"
    )
    p.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="SUBMISSION",
        help="a second submission on the same split: filter by 'A right, B wrong' at rank 1",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N queries (thumbnails take time)")


def cmd_browse(args: argparse.Namespace) -> int:
    from benchmark.reports.browse import browse_command

    return browse_command(args.submission, args.data_root, args.out, args.against, args.limit)


def _visualize_module():
    """``benchmark.cli.visualize`` if this checkout has it (imported only for ``visualize``: matplotlib)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("benchmark.cli.visualize") is None:
        return None
    return importlib.import_module("benchmark.cli.visualize")


def _visualize_arguments(p: argparse.ArgumentParser) -> None:
    mod = _visualize_module()
    if mod is not None:
        mod.add_arguments(p)


def cmd_visualize(args: argparse.Namespace) -> int:
    mod = _visualize_module()
    if mod is None:
        print(
            "error: visualize is not available in this checkout (benchmark/cli/visualize.py is missing)",
            file=sys.stderr,
        )
        return 1
    return int(mod.main(args) or 0)


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        return external.evaluate_command(args)
    except external.ArgumentProblem as exc:
        raise UsageError(str(exc)) from None


COMMANDS: tuple[Command, ...] = (
    Command("run", "train + evaluate + submit (the default)", add_run_arguments, cmd_run),
    Command("list", "registered methods, datasets and profiles", _list_arguments, cmd_list),
    Command(
        "check-data", "integrity report of a data root (non-zero exit on faults)", _check_data_arguments, cmd_check_data
    ),
    Command("synth", "write a synthetic dataset in a real layout", _synth_arguments, cmd_synth),
    Command(
        "prepare",
        "LPR4M: download the release's URL lists with img2dataset into the loader's layout",
        _prepare_arguments,
        cmd_prepare,
    ),
    Command("score", "re-score a submission from its rankings against the ground truth", _score_arguments, cmd_score),
    Command("leaderboard", "regenerate the leaderboard from the submissions", _leaderboard_arguments, cmd_leaderboard),
    Command(
        "visualize",
        "qualitative figures (benchmark/cli/visualize.py)",
        _visualize_arguments,
        cmd_visualize,
        eager=False,
    ),
    Command(
        "reproduce",
        "re-run a submission's command at its recorded commit (temporary git worktree, one thread) "
        "and compare the metrics",
        _reproduce_arguments,
        cmd_reproduce,
    ),
    Command(
        "browse",
        "per-query pages of a submission: frames, ground truth, top-5 with hits marked",
        _browse_arguments,
        cmd_browse,
    ),
    Command(
        "evaluate",
        "score a model's embeddings or TREC run file made outside the harness: an external submission "
        "(docs/external.md)",
        external.add_evaluate_arguments,
        cmd_evaluate,
    ),
    Command(
        "export",
        "write submissions' rankings and their dataset's qrels as TREC files (ranx, trec_eval)",
        external.add_export_arguments,
        external.export_command,
    ),
)
