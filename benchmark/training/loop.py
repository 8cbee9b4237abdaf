"""One epoch of training: micro-steps, optimizer steps, log-interval reads, mid-epoch saves.

A training step never reads a device value on the host: losses go into a
:class:`~benchmark.training.loss_meter.LossMeter` on the device, and the host reads it (one
copy, one sync) every ``log_every`` optimizer steps, before every checkpoint and at the end of
the epoch. That read is also where a non-finite loss is caught: training stops with
:class:`NonFiniteLossError` naming the first bad micro-step, before any checkpoint could take
in the weights it produced, so the last good checkpoint stays on disk.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from benchmark.core.config import TrainConfig
from benchmark.core.progress import StepProgress
from benchmark.training.distributed import DistEnv, all_true, mean_across_ranks
from benchmark.training.loss_meter import LossMeter, MeterReading
from benchmark.training.state import Stateful, TrainState


class TrainingError(RuntimeError):
    pass


class NonFiniteLossError(TrainingError):
    pass


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Trainer:
    """What every step of a run needs, fixed for the run."""

    objs: Stateful
    module: nn.Module  # the method's ``training_losses`` as a forward (DDP-wrapped when distributed)
    cfg: TrainConfig
    env: DistEnv
    amp: Optional[torch.dtype]
    micro_bs: int
    accum: int
    steps_per_epoch: int
    total_steps: int
    run_dir: Path
    identity: Optional[dict[str, Any]] = None
    log_every: int = 50  # optimizer steps between two host reads of the losses

    @property
    def split(self) -> dict[str, int]:
        return {"world_size": self.env.world_size, "per_process_batch": self.micro_bs, "grad_accum": self.accum}


def micro_step(tr: Trainer, batch: dict[str, Any], last_micro: bool) -> tuple[dict[str, Tensor], Tensor]:
    """Forward and backward of one micro-batch (DDP's all-reduce only on the last one)."""
    sync = contextlib.nullcontext() if last_micro or not tr.env.distributed else tr.module.no_sync()
    with sync:
        with autocast(tr.env.device, tr.amp):
            losses = tr.module(batch)
        loss = sum(losses.values())
        tr.objs.scaler.scale(loss / tr.accum).backward()
    return losses, loss


def optimizer_step(tr: Trainer) -> None:
    """Unscale, clip, step, zero the gradients, advance the schedule."""
    opt, scaler = tr.objs.optimizer, tr.objs.scaler
    scaler.unscale_(opt)
    if tr.cfg.grad_clip and tr.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(tr.objs.model.parameters(), tr.cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    tr.objs.scheduler.step()


def checked_read(tr: Trainer, meter: LossMeter, state: TrainState, epoch_start_step: int) -> MeterReading:
    """Read the meter (one sync); raise if any rank saw a non-finite loss since the epoch began."""
    reading = meter.read()
    if not all_true(reading.first_bad is None, tr.env):
        bad = reading.first_bad
        step = epoch_start_step + bad // tr.accum if bad is not None else state.step
        parts = ", ".join(f"{k}={v:.4g}" for k, v in reading.bad_losses.items() if k != "loss")
        where = f" ({parts})" if parts else " (on another process)"
        last = state.last_checkpoint
        kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"non-finite training loss at epoch {state.epoch + 1}, optimizer step {step + 1}{where}; "
            f"training stopped and {kept}. Lower the learning rate or check the data."
        )
    return reading


def train_one_epoch(
    tr: Trainer,
    state: TrainState,
    loader: Iterable[dict[str, Any]],
    meter: LossMeter,
    prog: StepProgress,
    clock: "RunClock",
) -> dict[str, Any]:
    """Run the rest of epoch ``state.epoch`` from micro-batch ``state.micro_in_epoch``; return its record.

    ``loader`` yields batches already on the device (:class:`~benchmark.training.prefetch.DevicePrefetcher`)."""
    limit = tr.steps_per_epoch * tr.accum
    epoch_start_step = state.step - state.micro_in_epoch // tr.accum
    micro, samples, data_wait, stopped = state.micro_in_epoch, 0, 0.0, False
    t_epoch = t_wait = time.perf_counter()
    for batch in loader:
        data_wait += time.perf_counter() - t_wait
        if micro >= limit:
            break
        last_micro = (micro + 1) % tr.accum == 0
        losses, loss = micro_step(tr, batch, last_micro)
        meter.add(losses, loss)
        micro += 1
        samples += tr.micro_bs * tr.env.world_size
        clock.samples += tr.micro_bs * tr.env.world_size
        if last_micro:
            optimizer_step(tr)
            state.step += 1
            state.micro_in_epoch = micro
            loss_now = None
            if state.step % tr.log_every == 0:
                reading = checked_read(tr, meter, state, epoch_start_step)
                loss_now = reading.sums.get("loss", 0.0) / max(reading.counted, 1)
            prog.update(state.step, loss=loss_now, rate=clock.rate())
            every = tr.cfg.checkpoint_every
            if every and state.step % every == 0 and state.step < tr.total_steps and micro < limit:
                reading = checked_read(tr, meter, state, epoch_start_step)
                state.save(tr.run_dir, tr.objs, tr.env, tr.split, tr.identity, reading.sums, reading.counted)
            if state.step >= tr.total_steps:
                stopped = micro < limit
                break
        t_wait = time.perf_counter()
    reading = checked_read(tr, meter, state, epoch_start_step)
    timing = {"samples": samples, "data_wait": data_wait, "wall": time.perf_counter() - t_epoch}
    return _finish_epoch(tr, state, reading, timing, micro if stopped else None)


def _finish_epoch(
    tr: Trainer, state: TrainState, reading: MeterReading, timing: dict[str, float], stopped_at: Optional[int]
) -> dict[str, Any]:
    """The epoch's history record (the global batch's mean losses), then its checkpoint: at
    micro-batch ``stopped_at`` with the running sums when training stopped mid-epoch."""
    logged = mean_across_ranks(reading.sums, tr.env)  # the global batch's loss, not rank 0's share
    wall = timing["wall"]
    record = {
        "epoch": state.epoch + 1,
        "step": state.step,
        **{k: round(v / max(reading.counted, 1), 6) for k, v in logged.items()},
        "lr": [round(g["lr"], 10) for g in tr.objs.optimizer.param_groups],
        "samples_per_s": round(timing["samples"] / max(wall, 1e-9), 3),
        "data_wait_s": round(timing["data_wait"], 3),  # time blocked on the DataLoader
        "wall_s": round(wall, 3),
    }
    if stopped_at is not None:
        record["partial"] = True
    state.history.append(record)
    if stopped_at is not None:
        state.micro_in_epoch = stopped_at
        state.save(tr.run_dir, tr.objs, tr.env, tr.split, tr.identity, reading.sums, reading.counted)
    else:
        state.epoch += 1
        state.micro_in_epoch = 0
        state.save(tr.run_dir, tr.objs, tr.env, tr.split, tr.identity)
    return record


@dataclass
class RunClock:
    """Samples processed since the run (not the epoch) began, for the progress bar's rate."""

    t_start: float
    samples: int = 0

    def rate(self) -> float:
        return self.samples / max(time.perf_counter() - self.t_start, 1e-9)
