"""Determinism: the same seed gives the same submission, byte for byte apart from timings.

Two runs of clip-meanpool (seed 0, ``--deterministic``, the feature cache off so that both
really encode) write submissions that must be equal once timestamps and wall-clock
measurements (``date`` and every ``*_s`` field) are removed; the second run even uses two
DataLoader worker processes instead of none (augmentation is seeded per item, see
:mod:`benchmark.training.item_seeding`). A third run with seed 1 must differ, so the comparison is
not vacuous. ``--deterministic`` itself is checked to set torch's flags.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from benchmark.cli.main import main
from benchmark.record import provenance
from benchmark.training.seeding import seed_everything
from tests.scaleout_helpers import load_json, run_args, strip_volatile, submission_path

STEPS = 3


pytestmark = pytest.mark.usefixtures("isolated_registry")  # conftest: registrations are forgotten


@pytest.fixture
def restore_determinism_flags():
    """``--deterministic`` changes process-wide torch settings: put them back afterwards."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


@pytest.mark.slow
def test_same_seed_same_submission_apart_from_timings(tmp_path, synth_lpr4m, monkeypatch, restore_determinism_flags):
    # one git lookup for all runs: other work may commit to this checkout while the test runs
    monkeypatch.setattr(provenance, "git_info", functools.lru_cache(maxsize=None)(provenance.git_info))
    out = tmp_path / "runs"  # same run directory: provenance.run_dir is equal too

    def run(res: str, *extra: str, seed: int = 0) -> dict:
        assert (
            main(run_args(out, tmp_path / res, "--deterministic", "--no-feature-cache", *extra, steps=STEPS, seed=seed))
            == 0
        )
        return load_json(submission_path(tmp_path / res, seed=seed))

    a = run("a")
    b = run("b", "--num-workers", "2")
    assert a["provenance"]["seeds"]["deterministic"] is True
    assert a["provenance"]["date"] and a["provenance"]["wall_time_s"]["train"] >= 0  # the fields we drop exist
    assert strip_volatile(a) == strip_volatile(b)
    c = run("c", seed=1)
    assert c["metrics"] != a["metrics"] or c["rankings"] != a["rankings"]
    assert strip_volatile(c["provenance"]["training"]["history"]) != strip_volatile(
        a["provenance"]["training"]["history"]
    )


def test_deterministic_flag_sets_torch_and_cublas_settings(restore_determinism_flags, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    info = seed_everything(5, deterministic=True, rank=1)
    assert info == {"seed": 5, "process_seed": 6, "deterministic": True}
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert torch.initial_seed() == 6  # seed + rank


def test_without_deterministic_the_flags_are_left_alone(restore_determinism_flags):
    torch.use_deterministic_algorithms(False)
    seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
