"""The command line (``run_benchmark.py``), in the style of lm-evaluation-harness.

With no subcommand it runs the benchmark (train + evaluate + submit)::

    run_benchmark.py --method rice --dataset lpr4m-synth --profile tiny --seed 0

Subcommands: ``list``, ``check-data``, ``synth``, ``score``, ``leaderboard``, ``visualize``, ``reproduce``
(and ``run``, the default, spelled out). Mistakes a user can make (an unknown name, a bad
``--set``, broken data, an unreadable submission) end with one ``error:`` line on stderr
and a non-zero exit status (2 for usage errors, 1 otherwise), never a stack trace; set
``LPR_BENCH_TRACEBACK=1`` to see the trace anyway.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

SUBCOMMANDS = ("run", "list", "check-data", "synth", "score", "leaderboard", "visualize", "reproduce", "browse", "prepare")
DEMO_METHOD = "rice"
DEMO_FALLBACK = "clip-meanpool"


class UsageError(Exception):
    """A bad command line (exit status 2)."""


# --- argument parsers --------------------------------------------------------------------


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    from benchmark.core.config import PROFILES

    p.add_argument("--method", required=True, help="a registered method (see `list`)")
    p.add_argument("--dataset", required=True, help="a registered dataset (see `list`)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (synthetic sets: generated when absent)")
    p.add_argument("--profile", default="tiny", choices=sorted(PROFILES), help="protocol profile (default: tiny)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the method's config, dotted (repeatable), e.g. --set encoder.layers=2")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="PATH_OR_MODULE",
                   help="import a method plugin (.py file, package folder or module name) first (repeatable)")
    p.add_argument("--pretrained", default=None, metavar="PATH",
                   help="initial encoder weights: a local checkpoint file or an open_clip hub tag")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (0: evaluate only)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=None, help="override the profile's global training batch")
    p.add_argument("--grad-accum", type=int, default=None, help="gradient-accumulation steps per optimizer step")
    p.add_argument("--lr-encoder", type=float, default=None, help="override the profile's encoder learning rate")
    p.add_argument("--lr-new", type=float, default=None, help="override the profile's new-module learning rate")
    p.add_argument("--weight-decay", type=float, default=None, help="override the profile's AdamW weight decay")
    p.add_argument("--grad-clip", type=float, default=None, metavar="NORM",
                   help="override the profile's global gradient-norm clip (0: no clipping, as the official RICE run)")
    p.add_argument("--group-batches", choices=("none", "livestream"), default=None,
                   help="livestream: build each training batch from chunks of one livestream's pairs (LPR4M)")
    p.add_argument("--group-size", type=int, default=None, metavar="N",
                   help="pairs per livestream chunk with --group-batches livestream (default 8)")
    p.add_argument("--rerank", choices=("none", "all", "topk"), default=None,
                   help="second stage for methods that have one (default: none)")
    p.add_argument("--rerank-topk", type=int, default=None, help="candidates re-scored with --rerank topk")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the profile's)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    p.add_argument("--weights", type=Path, default=None, metavar="CKPT",
                   help="start from the model weights of a run checkpoint (RUN_DIR/last.pt); with --epochs 0 "
                        "this evaluates them under this run's settings, e.g. --set ipd=oracle")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps, mid-epoch (default: at epoch ends only)")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="always re-encode the test set (default: reuse embeddings cached for these weights)")
    p.add_argument("--no-frame-cache", action="store_true",
                   help="decode every frame each time it is read (default: decode and resize once into "
                        "<LPR_BENCH_CACHE or .cache>/frames, where it fits; the model sees the same inputs)")
    p.add_argument("--deterministic", action="store_true", help="ask torch for deterministic kernels")
    p.add_argument("--synth-size", default="default", choices=("tiny", "default"),
                   help="size of a generated synthetic dataset (default: default)")
    p.add_argument("--output-dir", type=Path, default=Path("runs"), help="run directories go here (default runs/)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="submissions and leaderboard go here (default results/)")
    p.add_argument("--no-leaderboard", action="store_true", help="write the submission but leave the leaderboard alone")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing submission of another run identity (data, truncation, code, settings)")
    p.add_argument("--demo-fallback", action="store_true",
                   help=f"if --method is {DEMO_METHOD!r} and it is not registered, run {DEMO_FALLBACK!r} and say so")


def build_parser(with_visualize: bool = False) -> argparse.ArgumentParser:
    """The parser; the ``visualize`` options are added only when that command is used."""
    parser = argparse.ArgumentParser(
        prog="run_benchmark.py",
        description="LPR-Bench: train and evaluate a livestream product recognition method under one protocol.",
        epilog=(
            "subcommands: run (default) | list | check-data | synth | score | leaderboard | visualize | reproduce | browse; "
            "`run_benchmark.py SUBCOMMAND -h` for each"
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    add_run_arguments(sub.add_parser("run", help="train + evaluate + submit (the default)"))

    p = sub.add_parser("list", help="registered methods, datasets and profiles")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="PATH_OR_MODULE")

    p = sub.add_parser("check-data", help="integrity report of a data root (non-zero exit on faults)")
    p.add_argument("--dataset", required=True, help="lpr4m, movingfashion (or a -synth variant)")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--deep", action="store_true", help="decode every image and open every video")

    p = sub.add_parser("synth", help="write a synthetic dataset in a real layout")
    p.add_argument("--layout", required=True, choices=("lpr4m", "movingfashion"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="default", help="tiny | default | lpr4m-scale (annotations only)")
    p.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                   help="a difficulty knob of the generator (repeatable)")
    p.add_argument("--release", action="store_true",
                   help="lpr4m: also write the release as the authors ship it to OUT-release (urls/: four URL lists and "
                        "annotation files; www/: the files the URLs name), for `prepare`")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/", help="--release: the URLs' prefix")
    p.add_argument("--original-size", default=None, metavar="WxH",
                   help="--release: write frames at this original size, boxes in its pixels (e.g. 144x256)")

    p = sub.add_parser("prepare", help="LPR4M: download the release's URL lists with img2dataset into the loader's layout")
    p.add_argument("--dataset", required=True, choices=("lpr4m",))
    p.add_argument("--urls", type=Path, required=True, help="folder with the four URL lists and the annotation files")
    p.add_argument("--out", type=Path, required=True, help="the data root to make (resumable: rerun to continue)")
    p.add_argument("--lists", choices=("all", "test"), default="all", help="test: only the two test lists")
    p.add_argument("--processes", type=int, default=4, help="img2dataset processes, and layout threads")
    p.add_argument("--threads", type=int, default=64, help="img2dataset threads per process")
    p.add_argument("--shard-size", type=int, default=50000, help="img2dataset samples per shard (README: 50000)")
    p.add_argument("--link", action="store_true", help="hard-link shard files into the layout (default: rename)")
    p.add_argument("--fast", action="store_true",
                   help="no HTTP: resize the release's own files (URLS/../www, a synthetic release) as img2dataset does")

    p = sub.add_parser("score", help="re-score a submission from its rankings against the ground truth")
    p.add_argument("submission", type=Path)
    p.add_argument("--data-root", type=Path, default=None,
                   help="the dataset's folder (synthetic sets: regenerated into the cache when absent)")

    p = sub.add_parser("leaderboard", help="regenerate the leaderboard from the submissions")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--data-root", dest="data_roots", action="append", default=[], metavar="DATASET=DIR",
                   help="where a real dataset lives, so that its rows are re-scored (repeatable); "
                        "synthetic ones are regenerated")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                   help="also print the paired test of two rows (submission file name or row label)")

    p = sub.add_parser("reproduce", help="re-run a submission's command at its recorded commit (temporary git "
                                         "worktree, one thread) and compare the metrics")
    p.add_argument("submission", type=Path)
    p.add_argument("--data-root", type=Path, default=None, help="the dataset's folder (synthetic sets: regenerated)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (worktree removed) and its submission")

    p = sub.add_parser("browse", help="per-query pages of a submission: frames, ground truth, top-5 with hits marked")
    p.add_argument("submission", type=Path)
    p.add_argument("--data-root", type=Path, default=None, help="the dataset's folder (synthetic sets: regenerated)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/browse/<submission>; never commit it)")
    p.add_argument("--against", type=Path, default=None, metavar="SUBMISSION",
                   help="a second submission on the same split: filter by 'A right, B wrong' at rank 1")
    p.add_argument("--limit", type=int, default=None, help="only the first N queries (thumbnails take time)")

    p = sub.add_parser("visualize", help="qualitative figures (delegated to benchmark/cli/visualize.py)")
    if with_visualize:
        _add_visualize_arguments(p)
    return parser


def _add_visualize_arguments(p: argparse.ArgumentParser) -> None:
    mod = _visualize_module()
    if mod is not None:
        mod.add_arguments(p)


def _visualize_module():
    """``benchmark.cli.visualize`` if this checkout has it (imported only for ``visualize``)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("benchmark.cli.visualize") is None:
        return None
    return importlib.import_module("benchmark.cli.visualize")


def parse_overrides(items: Sequence[str], what: str = "--set") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


# --- run ---------------------------------------------------------------------------------


def resolve_run_config(args: argparse.Namespace):
    """The :class:`RunConfig` the command line asks for (names checked, overrides validated)."""
    from benchmark.core.config import RunConfig, for_method, get_profile
    from benchmark.core.registry import DATASETS, METHODS
    from benchmark.cli.runner import pretrained_override, whole_weights_overrides
    from methods.base import apply_overrides

    method = args.method
    if args.demo_fallback and method == DEMO_METHOD and DEMO_METHOD not in METHODS:
        print(
            f"note: method {DEMO_METHOD!r} is not registered in this checkout; the demo falls back to "
            f"{DEMO_FALLBACK!r} (RICE's ICL branch alone)",
            file=sys.stderr,
        )
        method = DEMO_FALLBACK
    cls = METHODS.get(method)
    DATASETS.get(args.dataset)
    try:
        profile = for_method(get_profile(args.profile), cls.TRAIN_RECIPE)
    except ValueError as exc:
        raise UsageError(f"method {method!r}: {exc}") from exc
    train_changes: dict[str, Any] = {}
    for field, value in (("epochs", args.epochs), ("max_steps", args.max_steps),
                         ("batch_size", args.batch_size), ("grad_accum", args.grad_accum),
                         ("checkpoint_every", args.checkpoint_every), ("lr_encoder", args.lr_encoder),
                         ("lr_new", args.lr_new), ("weight_decay", args.weight_decay),
                         ("grad_clip", args.grad_clip), ("group_size", args.group_size)):
        if value is not None:
            positive = field in ("batch_size", "grad_accum", "checkpoint_every", "group_size")
            if not value >= 0 or (value == 0 and positive):  # `not >=` also refuses a NaN rate
                raise UsageError(f"--{field.replace('_', '-')} must be {'positive' if positive else '>= 0'}, got {value}")
            train_changes[field] = value
    if args.group_batches is not None:
        train_changes["group_batches"] = args.group_batches
    if args.epochs is not None:  # --epochs replaces a schedule given in updates (the paper profile's)
        train_changes["updates"] = None
    eval_changes: dict[str, Any] = {}
    if args.rerank is not None:
        eval_changes["rerank"] = args.rerank
    if args.rerank_topk is not None:
        if args.rerank_topk < 1:
            raise UsageError(f"--rerank-topk must be >= 1, got {args.rerank_topk}")
        eval_changes["rerank_topk"] = args.rerank_topk
    if args.bootstrap is not None:
        eval_changes["bootstrap"] = max(0, args.bootstrap)
    profile = dataclasses.replace(
        profile,
        train=dataclasses.replace(profile.train, **train_changes),
        eval=dataclasses.replace(profile.eval, **eval_changes),
    )
    overrides: dict[str, Any] = parse_overrides(args.overrides)
    if args.pretrained:
        try:
            overrides.update(pretrained_override(cls, profile.name, args.pretrained))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.weights is not None:
        if args.resume:
            raise UsageError("--weights and --resume: pick one (--resume continues the run directory's own checkpoint)")
        overrides = whole_weights_overrides(cls, profile.name, overrides)
    try:
        apply_overrides(cls.default_config(profile.name), overrides)
    except (KeyError, ValueError) as exc:
        raise UsageError(_message(exc)) from None
    if profile.eval.rerank != "none" and not getattr(cls, "supports_rerank", False):
        raise UsageError(f"--rerank {profile.eval.rerank}: method {method!r} has no second stage")
    return RunConfig(
        method=method, dataset=args.dataset, profile=profile, data_root=args.data_root, seed=args.seed,
        output_dir=args.output_dir, results_dir=args.results_dir, method_overrides=overrides,
        device=args.device, resume=args.resume, deterministic=args.deterministic, synth_size=args.synth_size,
        feature_cache=not args.no_feature_cache, frame_cache=not args.no_frame_cache, weights=args.weights,
    )


def load_registries(plugins: Sequence[str]) -> None:
    """Built-in methods and datasets, entry points, then ``--plugin`` imports."""
    from benchmark.core.registry import RegistryError, load_all, load_plugin

    load_all(())
    for spec in plugins:
        try:
            load_plugin(spec)
        except RegistryError:
            raise
        except (ImportError, OSError, SyntaxError) as exc:
            raise UsageError(f"--plugin {spec}: cannot be imported ({type(exc).__name__}: {_message(exc)})") from exc


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
        rate = f"{inf['queries_per_s']} queries/s" if inf["queries_per_s"] is not None else "queries/s not measured (cached features)"
        con.print(f"inference: {rate} ({inf['queries']} queries, {inf['pairs_scored']} pairs re-scored, "
                  f"{inf['threads']} threads)")
    missing = int((~result.evaluation.index.valid).sum()) if result.evaluation is not None else 0
    if missing:
        con.print(f"{missing} queries have no frames in the release: counted as misses (submission: "
                  "dataset.num_queries_without_frames)")
    if result.leaderboard_table is not None:
        con.print(result.leaderboard_table)
    if result.submission_path is not None:
        con.print(f"submission: {result.submission_path}")
    if result.leaderboard_error:
        print(f"warning: this run's submission was written; leaderboard: {result.leaderboard_error}", file=sys.stderr)
    con.print(f"run directory: {result.run_dir}")


# --- list --------------------------------------------------------------------------------


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


# --- data --------------------------------------------------------------------------------


def cmd_check_data(args: argparse.Namespace) -> int:
    from datasets.check import check_dataset

    try:
        report = check_dataset(args.dataset, args.data_root, deep=args.deep)
    except ValueError as exc:  # unknown dataset name
        raise UsageError(_message(exc)) from None
    print(report.format())
    return 0 if report.ok else 1


def parse_knobs(items: Sequence[str]) -> dict[str, Any]:
    """``--set knob=value``: values read as JSON (numbers, ``[lo, hi]``), else kept as text."""
    import json

    knobs: dict[str, Any] = {}
    for key, text in parse_overrides(items, "--set").items():
        try:
            knobs[key] = json.loads(text)
        except ValueError:
            knobs[key] = text
    return knobs


def cmd_synth(args: argparse.Namespace) -> int:
    from datasets.synthetic import generate
    from datasets.synthetic.knobs import get_size, knobs_from_dict

    try:
        knobs = knobs_from_dict(parse_knobs(args.knobs))
        get_size(args.size)
    except (ValueError, TypeError) as exc:
        raise UsageError(_message(exc)) from None
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


def cmd_prepare(args: argparse.Namespace) -> int:
    from datasets.prepare_lpr4m import PrepareError, prepare

    try:
        result = prepare(args.urls, args.out, which=args.lists, processes=args.processes, threads=args.threads,
                         shard_size=args.shard_size, link=args.link, fast=args.fast)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rep = result.report
    for name, c in rep["lists"].items():
        print(f"{name}: {c['downloaded']}/{c['urls']} downloaded, {c['failed']} failed")
    print(f"test clips without frames: {len(rep['test_clips_without_frames'])}, gallery images missing: "
          f"{len(rep['gallery_images_missing'])}; report: {result.out / 'prepare_report.json'}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    return 0


# --- results -----------------------------------------------------------------------------


def cmd_score(args: argparse.Namespace) -> int:
    from benchmark.reports import publish

    return publish.score_command(args.submission, args.data_root)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.reports import publish

    roots = {k: Path(v) for k, v in parse_overrides(args.data_roots, "--data-root").items()}
    return publish.leaderboard_command(args.results_dir, roots or None, compare=args.compare)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from benchmark.record.reproduce import reproduce_command

    return reproduce_command(args.submission, args.data_root, keep=args.keep)


def cmd_browse(args: argparse.Namespace) -> int:
    from benchmark.reports.browse import browse_command

    return browse_command(args.submission, args.data_root, args.out, args.against, args.limit)


def cmd_visualize(args: argparse.Namespace) -> int:
    mod = _visualize_module()
    if mod is None:
        print("error: visualize is not available in this checkout (benchmark/cli/visualize.py is missing)", file=sys.stderr)
        return 1
    return int(mod.main(args) or 0)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "list": cmd_list,
    "check-data": cmd_check_data,
    "synth": cmd_synth,
    "prepare": cmd_prepare,
    "score": cmd_score,
    "leaderboard": cmd_leaderboard,
    "visualize": cmd_visualize,
    "browse": cmd_browse,
    "reproduce": cmd_reproduce,
}


# --- entry point -------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args and type(exc).__str__ is KeyError.__str__:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or environment, reported as one line."""
    from benchmark.core.atomic import WriteError
    from benchmark.training.checkpoint import CheckpointError
    from benchmark.training.distributed import DeviceError
    from benchmark.training.engine import TrainingError
    from benchmark.evaluation.evaluate import EvaluationError
    from datasets.errors import DataError
    from methods.encoders import EncoderLoadError

    from benchmark.record.reproduce import ReproduceError
    from benchmark.record.run_identity import IdentityError
    from benchmark.cli.runner import MethodBuildError
    from benchmark.record.submission import SubmissionError

    return (
        WriteError, CheckpointError, DeviceError, TrainingError, EvaluationError, DataError, EncoderLoadError,
        SubmissionError, MethodBuildError, IdentityError, ReproduceError,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), dispatch, and return the exit status."""
    from benchmark.core.registry import RegistryError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    elif not argv:
        build_parser().print_help()
        return 2
    traceback = bool(os.environ.get("LPR_BENCH_TRACEBACK"))
    try:
        args = build_parser(with_visualize=argv[0] == "visualize").parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return HANDLERS[args.command](args)
    except (RegistryError, UsageError) as exc:
        if traceback:
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if traceback or not isinstance(exc, _user_errors()):
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 1
