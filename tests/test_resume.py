"""Resume after a hard kill: SIGKILL mid-epoch, ``--resume``, bit-identical end state on the CPU.

A subprocess runs ``run_benchmark.py`` (clip-meanpool's loss, 8 optimizer steps over two
epochs of lpr4m-synth tiny, ``--checkpoint-every 2``) and blocks inside step 4 (the test
plugin's ``LPR_TEST_STALL_AT_CALL``); once its step-2 checkpoint is on disk the test SIGKILLs
it, resumes in this process and compares with an uninterrupted run (no ``--checkpoint-every``,
so checkpointing itself is shown not to perturb training). Tolerance: none. Weights,
optimizer-visible results, metrics, rankings and the loss history must be identical; one
thread everywhere so that the CPU kernels are the same.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from benchmark.cli.main import main
from benchmark.training.checkpoint import CheckpointError, load_checkpoint
from tests.scaleout_helpers import (
    PYTHON,
    REPO,
    load_json,
    max_metric_diff,
    run_args,
    run_dir,
    strip_volatile,
    submission_path,
    subprocess_env,
    weights,
)

STEPS = 8  # 5 steps per epoch at batch 8 (42 pairs): the resume crosses an epoch boundary
EVERY = 2
STALL_AT_CALL = 3  # 0-based training_losses call: inside step 4, after the step-2 checkpoint


pytestmark = pytest.mark.usefixtures("isolated_registry")  # conftest: registrations are forgotten


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _wait_for_checkpoint(path: Path, step: int, proc: subprocess.Popen, timeout: float = 600.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended (status {proc.returncode}) before it could be killed:\n"
                f"{proc.stderr.read()[-3000:] if proc.stderr else ''}"
            )
        if path.is_file():
            try:
                state = load_checkpoint(path)
            except CheckpointError:  # cannot happen with atomic writes; keep polling if it did
                state = None
            if state is not None and state["step"] >= step:
                return state
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step} within {timeout} s")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, synth_lpr4m, one_thread):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(run_args(ref / "runs", ref / "res", steps=STEPS)) == 0

    cmd = [
        PYTHON,
        str(REPO / "run_benchmark.py"),
        *run_args(cut / "runs", cut / "res1", "--checkpoint-every", str(EVERY), steps=STEPS),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=subprocess_env(LPR_TEST_STALL_AT_CALL=str(STALL_AT_CALL)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = _wait_for_checkpoint(run_dir(cut / "runs") / "last.pt", EVERY, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not submission_path(cut / "res1").exists()  # it never got to evaluate
    # the checkpoint is mid-epoch: position, every rank's RNG state and the running loss sums
    assert (state["epoch"], state["step"], state["micro_in_epoch"]) == (0, EVERY, EVERY)
    assert len(state["rng_per_rank"]) == 1 and isinstance(state["rng_per_rank"][0]["torch"], torch.Tensor)
    assert state["epoch_partial"][0]["counted"] == EVERY and state["epoch_partial"][0]["sums"]["icl"] > 0
    assert not [p for p in (cut / "runs").rglob("*.tmp")]

    assert main(run_args(cut / "runs", cut / "res2", "--checkpoint-every", str(EVERY), "--resume", steps=STEPS)) == 0
    s_ref, s_cut = load_json(submission_path(ref / "res")), load_json(submission_path(cut / "res2"))
    assert s_cut["provenance"]["training"]["resumed_from_step"] == EVERY
    assert s_cut["provenance"]["training"]["steps"] == s_ref["provenance"]["training"]["steps"] == STEPS
    w_ref, w_cut = weights(ref / "runs"), weights(cut / "runs")
    assert w_ref.keys() == w_cut.keys()
    unequal = [k for k in w_ref if not torch.equal(w_ref[k], w_cut[k])]
    assert not unequal, unequal
    diff = max_metric_diff(s_ref, s_cut)
    print(f"\nkilled at step {EVERY} + resumed vs uninterrupted: weights bitwise equal, max |metric diff| = {diff}")
    assert diff == 0.0
    assert s_cut["rankings"] == s_ref["rankings"]
    assert s_cut["metrics"] == s_ref["metrics"]
    assert strip_volatile(s_cut["provenance"]["training"]["history"]) == strip_volatile(
        s_ref["provenance"]["training"]["history"]
    )
    # the optimizer and scheduler ended in the same state as well
    o_ref = load_checkpoint(run_dir(ref / "runs") / "last.pt")
    o_cut = load_checkpoint(run_dir(cut / "runs") / "last.pt")
    assert o_ref["scheduler"]["last_epoch"] == o_cut["scheduler"]["last_epoch"] == STEPS
    for pid, st in o_ref["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, o_cut["optimizer"]["state"][pid][name]), (pid, name)


def test_checkpoint_every_must_be_positive(capsys, tmp_path):
    rc = main(run_args(tmp_path / "runs", tmp_path / "res", "--checkpoint-every", "0"))
    assert rc == 2
    assert "--checkpoint-every must be positive, got 0" in capsys.readouterr().err


# --- the engine alone (toy model, milliseconds) ------------------------------------------------


def _toy_train(run: Path, toy=None, **changes):
    import dataclasses

    from benchmark.core.config import TrainConfig
    from benchmark.training import engine
    from benchmark.training.distributed import DistEnv
    from tests.toy_methods import RegressionData, ToyConfig, ToyRegression

    cfg = dataclasses.replace(TrainConfig(epochs=2, batch_size=8, lr_encoder=1e-2, lr_new=1e-2, amp=False), **changes)
    torch.manual_seed(0)
    m = ToyRegression(toy or ToyConfig())
    return m, engine.train(
        m, RegressionData(32), cfg, env=DistEnv(), run_dir=run, seed=0, show_progress=False, resume=True
    )


def test_checkpoint_every_resume_restores_the_running_loss_sums(tmp_path):
    from tests.toy_methods import SimulatedCrash, ToyConfig, params_of

    straight, ref = _toy_train(tmp_path / "a")
    with pytest.raises(SimulatedCrash):  # dies inside step 4 of epoch 1, after the step-3 checkpoint
        _toy_train(tmp_path / "b", toy=ToyConfig(crash_at_call=3), checkpoint_every=1)
    state = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (state["step"], state["micro_in_epoch"]) == (3, 3) and state["epoch_partial"][0]["counted"] == 3
    resumed, res = _toy_train(tmp_path / "b", checkpoint_every=1)
    assert res.resumed_from_step == 3
    # epoch 1's record averages all 4 micro-batches, 3 of them from before the crash
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert all(torch.equal(v, params_of(straight)[k]) for k, v in params_of(resumed).items())


def test_mid_epoch_resume_refuses_another_batch_split(tmp_path):
    _toy_train(tmp_path, max_steps=3)
    with pytest.raises(CheckpointError, match="stopped mid-epoch under .*'grad_accum': 1.*needs the same processes"):
        _toy_train(tmp_path, grad_accum=2)
    _, res = _toy_train(tmp_path)  # the same split resumes
    assert res.resumed_from_step == 3 and res.steps == 8
