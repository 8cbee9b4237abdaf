"""Shared pieces of the scale-out / robustness tests: fast CLI arguments, volatile fields."""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "robust_plugin.py"
FAULTS = "clip-meanpool-faults"

# clip-meanpool's tiny encoder made smaller still (1 layer, width 32, 4x4 patch grid at 112 px):
# the tests are about the harness, not the model, and must take seconds on 2 shared cores. The
# patchify stem: the tiny profile's conv stem has BatchNorm, whose batch statistics depend on how
# a global batch is split (processes, accumulation steps), so "2 processes == 1 process" holds
# for the harness only with a model without batch-dependent layers (as for any BN network).
SMALL_ENCODER = [
    "--set",
    "encoder.layers=1",
    "--set",
    "encoder.width=32",
    "--set",
    "encoder.heads=2",
    "--set",
    "encoder.patch_size=28",
    "--set",
    "encoder.embed_dim=32",
    "--set",
    "encoder.stem=patchify",
]

SUB_NAME = "lpr4m-synth__tiny__{label}{start}__seed{seed}.json"
BATCH = 8  # the runs' global batch: not the tiny profile's, so it is part of their label


def run_args(
    out: Path, res: Path, *extra: str, method: str = FAULTS, steps: int = 4, batch: int = BATCH, seed: int = 0
) -> list[str]:
    """``run_benchmark.py`` arguments: lpr4m-synth (tiny), the small encoder, ``steps`` steps."""
    plugin = ["--plugin", str(PLUGIN)] if method == FAULTS else []
    return [
        *plugin,
        "--method",
        method,
        "--dataset",
        "lpr4m-synth",
        "--synth-size",
        "tiny",
        "--profile",
        "tiny",
        "--seed",
        str(seed),
        "--max-steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--num-workers",
        "0",
        "--bootstrap",
        "20",
        "--device",
        "cpu",
        "--output-dir",
        str(out),
        "--results-dir",
        str(res),
        "--no-leaderboard",
        *SMALL_ENCODER,
        *extra,
    ]


@functools.lru_cache(maxsize=None)  # builds the method: once per (method, sets, trained)
def run_label(method: str = FAULTS, sets: tuple[str, ...] = (), trained: bool = True) -> str:
    """The label ``run_benchmark`` gives :func:`run_args`' run of ``method`` with ``sets``
    (``key=value`` beyond the small encoder's): the settings its variant does not name join it,
    and, for a run that trains (``trained``), its recipe change (batch ``BATCH``)."""
    import dataclasses

    from benchmark.cli.run_setup import method_label
    from benchmark.core.config import get_profile
    from benchmark.core.registry import METHODS, load_builtin_methods, load_plugin
    from benchmark.record.config_diff import recipe_changes, variant_with_settings
    from methods.base import DataInfo, build_method

    load_builtin_methods()
    if method == FAULTS and method not in METHODS:
        load_plugin(str(PLUGIN))
    overrides = dict(kv.split("=", 1) for kv in [*SMALL_ENCODER[1::2], *sets])
    cls = METHODS.get(method)
    built = build_method(
        cls, "tiny", DataInfo(num_products=8, num_categories=2, num_frames=4, image_size=112), overrides
    )
    train = dataclasses.replace(get_profile("tiny").train, batch_size=BATCH)
    recipe = recipe_changes("tiny", train) if trained else {}
    return method_label(method, variant_with_settings(built, cls.default_config("tiny"), recipe=recipe))


def submission_path(
    res: Path, method: str = FAULTS, seed: int = 0, sets: tuple[str, ...] = (), start: str = ""
) -> Path:
    """The submission of that run (``start``: ``"untrained"`` for an ``--epochs 0`` one)."""
    name = SUB_NAME.format(
        label=run_label(method, sets, trained=not start), start=f"__{start}" if start else "", seed=seed
    )
    return Path(res) / "submissions" / name


def run_dir(out: Path, method: str = FAULTS, seed: int = 0, sets: tuple[str, ...] = ()) -> Path:
    return Path(out) / "lpr4m-synth" / run_label(method, sets) / f"tiny-seed{seed}"


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def weights(out: Path, method: str = FAULTS, seed: int = 0, sets: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    from benchmark.training.checkpoint import load_checkpoint

    return load_checkpoint(run_dir(out, method, seed, sets) / "last.pt")["model"]


def _volatile(key: str) -> bool:
    """Timestamps and wall-clock measurements: ``date`` and every ``*_s`` (seconds, per second)."""
    return key == "date" or key.endswith("_s")


def strip_volatile(obj: Any) -> Any:
    """``obj`` without timestamps and wall-clock measurements (at any depth)."""
    obj = copy.deepcopy(obj)

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items() if not _volatile(k)}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(obj)


def metric_values(sub: dict[str, Any]) -> dict[str, float]:
    """Every metric value and CI bound of a submission, flattened (overall and breakdowns)."""
    out: dict[str, float] = {}
    m = sub["metrics"]
    for name, e in m["overall"].items():
        out[f"overall.{name}"] = e["value"]
        if e.get("ci95"):
            out[f"overall.{name}.lo"], out[f"overall.{name}.hi"] = e["ci95"]
    for attr, buckets in m["breakdowns"].items():
        for val, bucket in buckets.items():
            for name, e in bucket.items():
                if name != "n":
                    out[f"{attr}.{val}.{name}"] = e["value"]
    return out


def max_metric_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    va, vb = metric_values(a), metric_values(b)
    assert va.keys() == vb.keys()
    return max(abs(va[k] - vb[k]) for k in va)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test process's environment (synthetic cache, quiet) plus one thread per process."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    env.pop("LPR_BENCH_TRACEBACK", None)
    return env


PYTHON = sys.executable


def cli_stderr(capsys) -> str:
    """What the command line wrote to stderr since the last read, checked to hold no traceback
    (a fault must end in an ``error:`` line, never in a stack trace)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err
