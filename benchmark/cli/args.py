"""Reading the command line: the run's options, ``KEY=VALUE`` lists, plugin loading, and the
:class:`RunConfig` a command line asks for, checked before any data is touched."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmark.core.config import PROFILES, USER_RESULTS_DIR, RunConfig, for_method, get_profile
from benchmark.core.registry import DATASETS, METHODS, RegistryError, load_all, load_builtin_datasets, load_plugin
from methods.base import Method, apply_overrides

DEMO_METHOD = "rice"
DEMO_FALLBACK = "clip-meanpool"


class UsageError(Exception):
    """A bad command line (exit status 2)."""


def message(exc: BaseException) -> str:
    """An exception as one line (a KeyError's message without its quotes)."""
    if isinstance(exc, KeyError) and exc.args and type(exc).__str__ is KeyError.__str__:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def add_plugin_argument(p: argparse.ArgumentParser) -> None:
    """``--plugin PATH_OR_MODULE`` (repeatable, collected in ``args.plugins``): one spelling and help
    for every subcommand that loads methods (run, list, visualize)."""
    p.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="PATH_OR_MODULE",
        help="import a method plugin (.py file, package folder or module name) first (repeatable)",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="a registered method (see `list`)")
    p.add_argument("--dataset", required=True, help="a registered dataset (see `list`)")
    p.add_argument(
        "--data-root", type=Path, default=None, help="dataset folder (synthetic sets: generated when absent)"
    )
    p.add_argument("--profile", default="tiny", choices=sorted(PROFILES), help="protocol profile (default: tiny)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the method's config, dotted (repeatable), e.g. --set encoder.layers=2",
    )
    add_plugin_argument(p)
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="PATH",
        help="initial encoder weights: a local checkpoint file or an open_clip hub tag",
    )
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (0: evaluate only)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=None, help="override the profile's global training batch")
    p.add_argument("--grad-accum", type=int, default=None, help="gradient-accumulation steps per optimizer step")
    p.add_argument("--lr-encoder", type=float, default=None, help="override the profile's encoder learning rate")
    p.add_argument("--lr-new", type=float, default=None, help="override the profile's new-module learning rate")
    p.add_argument("--weight-decay", type=float, default=None, help="override the profile's AdamW weight decay")
    p.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        metavar="NORM",
        help="override the profile's global gradient-norm clip (0: no clipping, as the official RICE run)",
    )
    p.add_argument(
        "--group-batches",
        choices=("none", "livestream"),
        default=None,
        help="livestream: build each training batch from chunks of one livestream's pairs (LPR4M)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=None,
        metavar="N",
        help="pairs per livestream chunk with --group-batches livestream (default 8)",
    )
    p.add_argument(
        "--rerank",
        choices=("none", "all", "topk"),
        default=None,
        help="second stage for methods that have one (default: none)",
    )
    p.add_argument("--rerank-topk", type=int, default=None, help="candidates re-scored with --rerank topk")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the profile's)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="CKPT",
        help="start from the model weights of a run checkpoint (RUN_DIR/last.pt); with --epochs 0 "
        "this evaluates them under this run's settings, e.g. --set ipd=oracle",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="STEPS",
        help="also checkpoint every STEPS optimizer steps, mid-epoch (default: at epoch ends only)",
    )
    p.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="always re-encode the test set (default: reuse embeddings cached for these weights)",
    )
    p.add_argument(
        "--no-frame-cache",
        action="store_true",
        help="decode every frame each time it is read (default: decode and resize once into "
        "<LPR_BENCH_CACHE or .cache>/frames, where it fits; the model sees the same inputs)",
    )
    p.add_argument("--deterministic", action="store_true", help="ask torch for deterministic kernels")
    p.add_argument(
        "--synth-size",
        default="default",
        choices=("tiny", "default"),
        help="size of a generated synthetic dataset (default: default)",
    )
    p.add_argument("--output-dir", type=Path, default=Path("runs"), help="run directories go here (default runs/)")
    p.add_argument(
        "--results-dir",
        type=Path,
        default=USER_RESULTS_DIR,
        help=f"this run's submission and the user's leaderboard go here (default {USER_RESULTS_DIR}/, "
        "untracked; the committed record is results/, written only when named)",
    )
    p.add_argument("--no-leaderboard", action="store_true", help="write the submission but leave the leaderboard alone")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing submission of another run identity (data, truncation, code, settings)",
    )
    p.add_argument(
        "--demo-fallback",
        action="store_true",
        help=f"if --method is {DEMO_METHOD!r} and it is not registered, run {DEMO_FALLBACK!r} and say so",
    )


def parse_overrides(items: Sequence[str], what: str = "--set") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def parse_knobs(items: Sequence[str]) -> dict[str, Any]:
    """``--set knob=value``: values read as JSON (numbers, ``[lo, hi]``), else kept as text."""
    knobs: dict[str, Any] = {}
    for key, text in parse_overrides(items, "--set").items():
        try:
            knobs[key] = json.loads(text)
        except ValueError:
            knobs[key] = text
    return knobs


def check_data_roots(roots: dict[str, Path]) -> None:
    """``--data-root DATASET=DIR`` pairs: a registered dataset name (with a suggestion when it is
    close to one) and an existing folder, checked before anything is re-scored."""
    load_builtin_datasets()
    for name, root in roots.items():
        DATASETS.get(name)
        if not root.is_dir():
            raise UsageError(f"--data-root {name}={root}: no such folder")


def load_registries(plugins: Sequence[str]) -> None:
    """Built-in methods and datasets, entry points, then ``--plugin`` imports."""
    load_all(())
    for spec in plugins:
        try:
            load_plugin(spec)
        except RegistryError:
            raise
        except (ImportError, OSError, SyntaxError) as exc:
            raise UsageError(f"--plugin {spec}: cannot be imported ({type(exc).__name__}: {message(exc)})") from exc


def refuse_removed_settings() -> None:
    """Settings this harness once read and no longer does: refused, never silently ignored."""
    if os.environ.get("LPR_BENCH_JPEG_DEVICE"):
        raise UsageError(
            "LPR_BENCH_JPEG_DEVICE is no longer supported: frames are decoded in the DataLoader's workers "
            "(docs/performance.md, nvJPEG); unset it and give --num-workers instead"
        )


def resolve_run_config(args: argparse.Namespace):
    """The :class:`RunConfig` the command line asks for (names checked, overrides validated)."""
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
    for field, value in (
        ("epochs", args.epochs),
        ("max_steps", args.max_steps),
        ("batch_size", args.batch_size),
        ("grad_accum", args.grad_accum),
        ("checkpoint_every", args.checkpoint_every),
        ("lr_encoder", args.lr_encoder),
        ("lr_new", args.lr_new),
        ("weight_decay", args.weight_decay),
        ("grad_clip", args.grad_clip),
        ("group_size", args.group_size),
    ):
        if value is not None:
            positive = field in ("batch_size", "grad_accum", "checkpoint_every", "group_size")
            if not value >= 0 or (value == 0 and positive):  # `not >=` also refuses a NaN rate
                raise UsageError(
                    f"--{field.replace('_', '-')} must be {'positive' if positive else '>= 0'}, got {value}"
                )
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
        raise UsageError(message(exc)) from None
    if profile.eval.rerank != "none" and not cls.supports_rerank:
        raise UsageError(f"--rerank {profile.eval.rerank}: method {method!r} has no second stage")
    return RunConfig(
        method=method,
        dataset=args.dataset,
        profile=profile,
        data_root=args.data_root,
        seed=args.seed,
        output_dir=args.output_dir,
        results_dir=args.results_dir,
        method_overrides=overrides,
        device=args.device,
        resume=args.resume,
        deterministic=args.deterministic,
        synth_size=args.synth_size,
        feature_cache=not args.no_feature_cache,
        frame_cache=not args.no_frame_cache,
        weights=args.weights,
    )


def pretrained_override(method_cls: type[Method], profile: str, path: str) -> dict[str, str]:
    """``--pretrained PATH`` as a config override: ``pretrained`` or ``encoder.pretrained``."""
    cfg = method_cls.default_config(profile)
    names = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
    if "pretrained" in names:
        return {"pretrained": path}
    if "encoder" in names:
        enc = cfg.encoder
        if dataclasses.is_dataclass(enc) and "pretrained" in {f.name for f in dataclasses.fields(enc)}:
            return {"encoder.pretrained": path}
    raise ValueError(
        f"--pretrained: method {method_cls.__name__} has no 'pretrained' or 'encoder.pretrained' config field"
    )


def whole_weights_overrides(method_cls: type[Method], profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` plus what a model loaded whole from a checkpoint needs: no pretrained-weight
    download (every ``pretrained`` field, top level or one config below, set to None unless the
    user set it) and no refusal of a random start (``require_pretrained = False``)."""
    cfg = method_cls.default_config(profile)
    out = dict(overrides)
    if not dataclasses.is_dataclass(cfg):
        return out
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "pretrained" and value:
            out.setdefault("pretrained", None)
        elif f.name == "require_pretrained" and value:
            out.setdefault("require_pretrained", False)
        elif dataclasses.is_dataclass(value) and getattr(value, "pretrained", None):
            out.setdefault(f"{f.name}.pretrained", None)
    return out
