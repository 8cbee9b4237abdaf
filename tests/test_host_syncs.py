"""Host syncs of a training step: the engine reads the losses once per log interval, and
RICE's step (tiny, and the paper profile at tiny shapes) reads nothing between its first
forward and its optimizer step. Counted with :mod:`tests.sync_counter` (a CPU cannot time a
GPU's stalls, but it can count the calls that would cause them)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark.core.config import TrainConfig
from benchmark.training import engine
from benchmark.training.distributed import DistEnv
from benchmark.training.state import TrainState
from tests.sync_counter import count_syncs, paused
from tests.toy_methods import RegressionData, ToyConfig, ToyRegression, params_of

CFG = TrainConfig(
    epochs=2,
    batch_size=8,
    lr_encoder=1e-2,
    lr_new=5e-2,
    weight_decay=0.01,
    warmup_ratio=0.25,
    grad_clip=100.0,
    amp=False,
)  # 32 pairs: 4 optimizer steps an epoch


def _train(tmp, log_every, toy=None, **kw):
    torch.manual_seed(123)
    m = ToyRegression(toy or ToyConfig())
    return m, engine.train(
        m,
        RegressionData(32),
        dataclasses.replace(CFG, **kw),
        env=DistEnv(),
        run_dir=tmp,
        seed=0,
        show_progress=False,
        log_every=log_every,
    )


@pytest.mark.parametrize("log_every, reads", [(1, 2 * (4 + 1)), (2, 2 * (2 + 1)), (4, 2 * (1 + 1)), (50, 2 * 1)])
def test_engine_reads_the_losses_once_per_log_interval(tmp_path, monkeypatch, log_every, reads):
    """8 steps over 2 epochs: one read every ``log_every`` steps plus one at each epoch's end
    (checkpoint writes, which must read, are not counted)."""
    save = TrainState.save
    with count_syncs() as log:
        monkeypatch.setattr(TrainState, "save", lambda self, *a, **k: _unpaused(log, save, self, *a, **k))
        _, res = _train(tmp_path / str(log_every), log_every)
    assert res.steps == 8
    assert log.count == reads, str(log)
    assert all(what == "tolist" and "loss_meter.py" in where for what, where in log.calls), str(log)


def _unpaused(log, save, *a, **k):
    with paused(log):
        return save(*a, **k)


def test_log_interval_changes_no_value(tmp_path):
    """Reading every step or once an epoch: the same weights and the same loss history."""
    a, ra = _train(tmp_path / "a", 1)
    b, rb = _train(tmp_path / "b", 50)
    assert all(torch.equal(v, params_of(b)[k]) for k, v in params_of(a).items())
    strip = [{k: v for k, v in h.items() if k not in ("wall_s", "samples_per_s", "data_wait_s")} for h in ra.history]
    assert strip == [
        {k: v for k, v in h.items() if k not in ("wall_s", "samples_per_s", "data_wait_s")} for h in rb.history
    ]


def test_a_non_finite_loss_between_reads_is_caught_at_the_next_read(tmp_path):
    """NaN at call 5 (epoch 2, step 6) with a read every 4 steps: caught at epoch 2's read,
    named by its own step, and epoch 1's checkpoint is what stays on disk."""
    from benchmark.training import checkpoint as ckpt

    with pytest.raises(engine.NonFiniteLossError) as err:
        _train(tmp_path, 4, toy=ToyConfig(nan_at_call=5))
    msg = str(err.value)
    assert "non-finite training loss at epoch 2, optimizer step 6 (mse=nan)" in msg
    assert str(tmp_path / "last.pt") in msg
    state = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


# --- RICE's training step --------------------------------------------------------------------
def _rice_step_syncs(build, tmp_path):
    """Syncs between the first forward and the optimizer step of one engine step (the
    engine's own micro_step and optimizer_step, with its LossMeter)."""
    from benchmark.core.frame_index import frame_indices
    from benchmark.training.loop import micro_step, optimizer_step
    from benchmark.training.loss_meter import LossMeter
    from tests.rice_fixtures import toy_batch

    torch.manual_seed(0)
    m = build()
    batch = toy_batch(b=4, t=3)
    batch.update(frame_indices(batch["frame_mask"], batch["box_mask"]))  # as collate_batch adds them
    cfg = TrainConfig(epochs=1, batch_size=4, lr_encoder=1e-4, lr_new=1e-3, grad_clip=1.0, amp=False)
    tr, _ = engine._build_trainer(m, 4, cfg, DistEnv(), tmp_path, None, None)
    meter = LossMeter(torch.device("cpu"))
    with count_syncs() as log:
        losses, loss = micro_step(tr, batch, True)
        meter.add(losses, loss)
        optimizer_step(tr)
    return log


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_a_rice_training_step_never_waits_for_the_device(tmp_path, profile):
    from tests.rice_fixtures import paper_small_rice, small_rice

    log = _rice_step_syncs(small_rice if profile == "tiny" else paper_small_rice, tmp_path)
    assert log.count == 0, str(log)


def test_the_prefetcher_on_the_cpu_fetches_in_step_with_the_consumer():
    """CPU path unchanged: each batch is fetched only when the step asks for it (a loader in
    the main process that draws from the global RNG sees the same interleaving as before)."""
    from benchmark.training.prefetch import DevicePrefetcher

    fetched = []

    def loader():
        for i in range(3):
            fetched.append(i)
            yield {"x": torch.full((2,), float(i)), "s": ["a", "b"]}

    seen = []
    for batch in DevicePrefetcher(loader(), torch.device("cpu"), engine.to_device):
        seen.append((len(fetched), float(batch["x"][0]), batch["s"]))
    assert seen == [(1, 0.0, ["a", "b"]), (2, 1.0, ["a", "b"]), (3, 2.0, ["a", "b"])]


def test_mid_epoch_resume_is_bit_identical_with_sparse_reads(tmp_path):
    """Checkpoints every step while the losses are read only every 3: the resumed run ends
    with the straight run's weights and loss history, bit for bit."""
    from tests.toy_methods import SimulatedCrash

    straight, ref = _train(tmp_path / "a", 3)
    with pytest.raises(SimulatedCrash):  # dies inside step 7 (epoch 2), after the step-6 checkpoint
        _train(tmp_path / "b", 3, toy=ToyConfig(crash_at_call=6), checkpoint_every=1)
    torch.manual_seed(123)
    resumed = ToyRegression()
    res = engine.train(
        resumed,
        RegressionData(32),
        dataclasses.replace(CFG, checkpoint_every=1),
        env=DistEnv(),
        run_dir=tmp_path / "b",
        seed=0,
        show_progress=False,
        log_every=3,
        resume=True,
    )
    assert res.resumed_from_step == 6
    assert all(torch.equal(v, params_of(straight)[k]) for k, v in params_of(resumed).items())
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
