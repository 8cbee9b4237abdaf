"""The one training protocol every method goes through.

* AdamW over :meth:`Method.parameter_groups` (encoder vs new-module learning rates from
  :class:`~benchmark.core.config.TrainConfig`), linear warmup then cosine decay to zero, as a
  ``LambdaLR`` stepped once per optimizer step.
* ``TrainConfig.batch_size`` is the GLOBAL batch: each process takes
  ``batch_size / (world_size * grad_accum)`` pairs per micro-batch and gradients are
  accumulated over ``grad_accum`` micro-batches (no DDP all-reduce until the last one).
  Data parallelism is exact (negatives are gathered across ranks); accumulation is exact
  for per-sample losses only: an in-batch-negative loss (InfoNCE) then sees one
  micro-batch's negatives. The logged loss is the global batch's (averaged over ranks).
* AdamW's ``eps`` is ``TrainConfig.adam_eps``; ``TrainConfig.updates``, when set, fixes the
  schedule's length in optimizer updates (the official RICE code's ``max_updates``), the number
  of epochs then following from the data size.
* Gradient clipping by global norm when ``grad_clip`` > 0; mixed precision on CUDA only (bf16 autocast where the
  GPU supports it, else fp16 with a ``GradScaler``); plain fp32 on the CPU.
* Randomness: the sampler shuffles with ``(seed, epoch)`` and every epoch re-seeds torch,
  NumPy, Python and the DataLoader's worker seeds from ``(seed, epoch, rank)``, so an epoch
  is the same whether training ran straight through or resumed from a checkpoint. Data
  augmentation is seeded per item from ``(seed, epoch, index)``
  (:mod:`benchmark.training.item_seeding`): the same whatever the world size, accumulation, worker
  count or resume point.
* ``torchrun``-ready: ``DistributedSampler(drop_last=True)`` so every rank sees equal
  batches (InfoNCE gathers negatives across ranks), DDP wrapping, rank 0 alone writes.
  ``group_batches="livestream"`` swaps in :class:`~benchmark.training.grouped_sampler.GroupedSampler`
  (chunks of one livestream per batch) under the same contract.
* ``method.set_epoch(epoch)`` (0-based) and, where a method defines it,
  ``method.on_epoch_start(epoch, epochs)`` are called before every epoch, resumed ones
  included. (Under DDP the set of parameters with ``requires_grad`` must not change
  between epochs: DDP fixes it when wrapping.)
* A checkpoint (:mod:`benchmark.training.checkpoint`) is written atomically after every epoch, every
  ``checkpoint_every`` optimizer steps when set (``--checkpoint-every``; it holds the position
  in the epoch, every rank's RNG states and the epoch's running loss sums, so a resumed run
  ends bit-identical on the CPU) and when ``max_steps`` stops training mid-epoch. A NaN/inf
  loss stops training with a :class:`NonFiniteLossError` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from benchmark.core.config import TrainConfig
from benchmark.core.progress import StepProgress
from benchmark.training import checkpoint as ckpt
from benchmark.training.distributed import DistEnv, all_gather_object, all_true, mean_across_ranks
from benchmark.training.epoch_loader import StreamFactory, epoch_loader
from benchmark.training.grouped_sampler import epoch_sampler
from benchmark.training.item_seeding import ItemSeededDataset
from benchmark.training.seeding import rng_state, seed_everything, set_rng_state
from methods.base import Method


class TrainingError(RuntimeError):
    pass


class NonFiniteLossError(TrainingError):
    pass


@dataclass
class TrainResult:
    """What a training run did (recorded in the submission's provenance)."""

    steps: int
    epochs_completed: int
    total_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    samples_per_s: float = 0.0
    wall_s: float = 0.0
    checkpoint: Optional[Path] = None
    resumed_from_step: Optional[int] = None
    per_process_batch: int = 0
    grad_accum: int = 1
    world_size: int = 1
    amp_dtype: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "epochs_completed": self.epochs_completed,
            "total_steps": self.total_steps,
            "samples_per_s": round(self.samples_per_s, 3),
            "wall_s": round(self.wall_s, 3),
            "resumed_from_step": self.resumed_from_step,
            "per_process_batch": self.per_process_batch,
            "grad_accum": self.grad_accum,
            "world_size": self.world_size,
            "amp_dtype": self.amp_dtype,
            "history": self.history,
        }


# --- pieces ------------------------------------------------------------------------------


def per_process_batch(global_batch: int, world_size: int, grad_accum: int) -> int:
    """Pairs per process per micro-batch; the global batch must split evenly."""
    denom = world_size * grad_accum
    if global_batch <= 0 or grad_accum <= 0:
        raise TrainingError(f"batch_size ({global_batch}) and grad_accum ({grad_accum}) must be positive")
    if global_batch % denom:
        raise TrainingError(
            f"global batch_size {global_batch} does not split over {world_size} process(es) x "
            f"{grad_accum} accumulation step(s); choose a multiple of {denom}"
        )
    return global_batch // denom


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear from 1/(warmup+1) to 1 over ``warmup_steps``, then cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(method: Method, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = method.parameter_groups(cfg.lr_encoder, cfg.lr_new, cfg.weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TrainingError(f"{type(method).__name__} has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr_new, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)


def amp_dtype_for(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it, else fp16; None (fp32) on the CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v for k, v in batch.items()}


class _LossForward(nn.Module):
    """Makes ``training_losses`` the ``forward`` DDP hooks into."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.method.training_losses(batch)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + epoch * 7_919) % 2**31


# --- the loop ----------------------------------------------------------------------------


def same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two run identities are the same run; a key set to None counts as absent (checkpoints
    written while ``initial_weights`` was always recorded, as None when unused, still resume)."""
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}
    return strip(a) == strip(b)


def train(
    method: Method,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    env: DistEnv,
    run_dir: Path,
    seed: int = 0,
    num_workers: int = 0,
    resume: bool = False,
    config: Optional[dict[str, Any]] = None,
    identity: Optional[dict[str, Any]] = None,
    collate: Optional[Callable[[Sequence[dict]], dict]] = None,
    show_progress: bool = True,
    groups: Optional[Sequence[str]] = None,
    stream: Optional[StreamFactory] = None,
) -> TrainResult:
    """Train ``method`` on ``dataset`` (a PairDataset) under ``cfg``; return what happened.

    ``config`` is written to ``run_dir/config.json``; ``identity`` (method, dataset, profile,
    seed, overrides) must match the checkpoint's when ``resume`` is set. ``groups`` (one key per
    pair, e.g. its livestream) is required when ``cfg.group_batches`` is not "none". ``stream``
    (a sharded root) builds each epoch's stream of items in place of the sampler.
    """
    if collate is None:
        from datasets.torch_data import collate_batch as collate
    run_dir = Path(run_dir)
    device = env.device
    micro_bs = per_process_batch(cfg.batch_size, env.world_size, cfg.grad_accum)
    accum = cfg.grad_accum
    n = len(dataset)  # type: ignore[arg-type]
    dataset = ItemSeededDataset(dataset, seed)  # augmentation = f(seed, epoch, item): rank/resume-proof
    if stream is not None and cfg.group_batches != "none":
        raise TrainingError(f"group_batches={cfg.group_batches!r} needs the map-style sampler; a sharded root streams "
                            "(prepare this root with --format files to group batches)")
    if cfg.group_batches != "none" and (groups is None or len(groups) != n):
        raise TrainingError(f"group_batches={cfg.group_batches!r} needs one group key per training pair")
    per_rank = n // env.world_size
    steps_per_epoch = (per_rank // micro_bs) // accum
    if steps_per_epoch == 0:
        raise TrainingError(
            f"the training split has {n} pairs; one optimizer step needs a global batch of "
            f"{cfg.batch_size} (lower it with --batch-size, or use more data)"
        )
    total_steps = cfg.epochs * steps_per_epoch
    epochs = cfg.epochs
    if cfg.updates is not None:  # a schedule in updates: as many epochs as they take
        total_steps = int(cfg.updates)
        epochs = -(-total_steps // steps_per_epoch)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, int(cfg.max_steps))
    warmup = int(round(cfg.warmup_ratio * total_steps))

    method.to(device)
    optimizer = build_optimizer(method, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total_steps))
    amp = amp_dtype_for(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    module: nn.Module = _LossForward(method)
    if env.distributed:
        module = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    epoch, step, micro_done = 0, 0, 0
    history: list[dict[str, Any]] = []
    resumed_from: Optional[int] = None
    restore_rng: Optional[dict[str, Any]] = None
    partial: Optional[dict[str, Any]] = None
    if resume and ckpt.find_resumable(run_dir):
        state = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir))
        if identity is not None and state.get("identity") is not None and not same_identity(state["identity"], identity):
            raise ckpt.CheckpointError(
                f"{ckpt.checkpoint_path(run_dir)}: belongs to another run ({state.get('identity')}), "
                f"not {identity}; drop --resume or pick another --output-dir"
            )
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.lr_lambdas = [warmup_cosine(warmup, total_steps)] * len(optimizer.param_groups)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, step, micro_done = int(state["epoch"]), int(state["step"]), int(state.get("micro_in_epoch", 0))
        history = list(state.get("history", []))
        per_rank = state.get("rng_per_rank")
        restore_rng = per_rank[env.rank] if per_rank and len(per_rank) == env.world_size else state.get("rng")
        parts = state.get("epoch_partial") if micro_done else None  # per rank: running loss sums
        partial = parts[env.rank] if isinstance(parts, list) and len(parts) == env.world_size else None
        split = {"world_size": env.world_size, "per_process_batch": micro_bs, "grad_accum": accum}
        if micro_done and state.get("batch_split") not in (None, split):
            raise ckpt.CheckpointError(
                f"{ckpt.checkpoint_path(run_dir)}: stopped mid-epoch under {state['batch_split']}; resuming there "
                f"needs the same processes and batch split, not {split} (or resume from an epoch-end checkpoint)"
            )
        resumed_from = step
    if env.is_main and config is not None:
        ckpt.save_config(run_dir, config)

    prog = StepProgress("train", total_steps, enabled=show_progress and env.is_main)
    last_ckpt = ckpt.checkpoint_path(run_dir) if resumed_from is not None else None
    t_start = time.perf_counter()
    samples_seen = 0
    method.train()

    def save(ep: int, st: int, micro: int, sums: Optional[dict[str, float]] = None, counted: int = 0) -> None:
        nonlocal last_ckpt
        # every rank's generators and running loss sums (a collective: every rank calls save)
        ranks = all_gather_object((rng_state(), {"sums": dict(sums or {}), "counted": counted}), env)
        if env.is_main:
            last_ckpt = ckpt.save_checkpoint(
                run_dir,
                {
                    "model": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": ranks[0][0],
                    "rng_per_rank": [r[0] for r in ranks],
                    "epoch_partial": [r[1] for r in ranks] if micro else None,
                    "epoch": ep,
                    "step": st,
                    "micro_in_epoch": micro,
                    "history": history,
                    "identity": identity,
                    "batch_split": {"world_size": env.world_size, "per_process_batch": micro_bs, "grad_accum": accum},
                },
            )

    with prog:
        if resumed_from is not None:
            prog.log(f"resumed from {ckpt.checkpoint_path(run_dir)} at epoch {epoch}, step {step}")
        prog.update(step)
        while epoch < epochs and step < total_steps:
            sampler = None if stream is not None else epoch_sampler(
                n, cfg.group_batches, cfg.group_size, micro_bs, num_replicas=env.world_size, rank=env.rank, seed=seed,
                groups=groups)
            if sampler is not None:
                sampler.set_epoch(epoch)
            skip_micro = micro_done
            if skip_micro and restore_rng is not None:
                set_rng_state(restore_rng)
            else:
                seed_everything(_epoch_seed(seed, epoch), rank=env.rank)
            restore_rng = None
            method.set_epoch(epoch)
            dataset.set_epoch(epoch)
            method.on_epoch_start(epoch, epochs)
            loader = epoch_loader(dataset, epoch, sampler=sampler, stream=stream, skip_micro=skip_micro,
                                  micro_bs=micro_bs, num_workers=num_workers, collate=collate,
                                  pin_memory=device.type == "cuda", generator_seed=_epoch_seed(seed, epoch) + env.rank)
            limit = steps_per_epoch * accum
            sums: dict[str, float] = dict(partial["sums"]) if skip_micro and partial else {}
            counted = int(partial["counted"]) if skip_micro and partial else 0
            partial = None
            t_epoch = time.perf_counter()
            epoch_samples = 0
            data_wait = 0.0
            micro = skip_micro
            stopped_mid_epoch = False
            t_wait = time.perf_counter()
            for batch in loader:
                data_wait += time.perf_counter() - t_wait
                if micro >= limit:
                    break
                last_micro = (micro + 1) % accum == 0
                sync = contextlib.nullcontext() if last_micro or not env.distributed else module.no_sync()
                with sync:
                    with autocast(device, amp):
                        losses = module(to_device(batch, device))
                    loss = sum(losses.values())
                    finite = bool(torch.isfinite(loss.detach()).all())
                    if not all_true(finite, env):
                        _raise_nonfinite(losses, epoch, step, last_ckpt)
                    scaler.scale(loss / accum).backward()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                counted += 1
                micro += 1
                batch_samples = micro_bs * env.world_size
                samples_seen += batch_samples
                epoch_samples += batch_samples
                if last_micro:
                    scaler.unscale_(optimizer)
                    if cfg.grad_clip and cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    step += 1
                    rate = samples_seen / max(time.perf_counter() - t_start, 1e-9)
                    prog.update(step, loss=float(loss.detach()), rate=rate)
                    every = cfg.checkpoint_every
                    if every and step % every == 0 and step < total_steps and micro < limit:
                        save(epoch, step, micro, sums, counted)  # mid-epoch: --checkpoint-every
                    if step >= total_steps:
                        stopped_mid_epoch = micro < limit
                        break
                t_wait = time.perf_counter()
            micro_done = 0
            ep_time = time.perf_counter() - t_epoch
            logged = mean_across_ranks(sums, env)  # the global batch's loss, not rank 0's share
            record = {
                "epoch": epoch + 1,
                "step": step,
                **{k: round(v / max(counted, 1), 6) for k, v in logged.items()},
                "lr": [round(g["lr"], 10) for g in optimizer.param_groups],
                "samples_per_s": round(epoch_samples / max(ep_time, 1e-9), 3),
                "data_wait_s": round(data_wait, 3),  # time blocked on the DataLoader
                "wall_s": round(ep_time, 3),
            }
            if stopped_mid_epoch:
                record["partial"] = True
                history.append(record)
                save(epoch, step, micro, sums, counted)
            else:
                history.append(record)
                epoch += 1
                save(epoch, step, 0)
            prog.log(
                f"epoch {record['epoch']}/{epochs}  step {step}/{total_steps}  loss {record.get('loss', float('nan')):.4f}"
                f"  {record['samples_per_s']:.1f} samples/s"
            )
    method.eval()
    wall = time.perf_counter() - t_start
    return TrainResult(
        steps=step,
        epochs_completed=epoch,
        total_steps=total_steps,
        history=history,
        samples_per_s=samples_seen / max(wall, 1e-9) if samples_seen else 0.0,
        wall_s=wall,
        checkpoint=last_ckpt,
        resumed_from_step=resumed_from,
        per_process_batch=micro_bs,
        grad_accum=accum,
        world_size=env.world_size,
        amp_dtype=str(amp).replace("torch.", "") if amp is not None else None,
    )


def _raise_nonfinite(losses: dict[str, Tensor], epoch: int, step: int, last: Optional[Path]) -> None:
    parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
    kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint had been written yet"
    raise NonFiniteLossError(
        f"non-finite training loss at epoch {epoch + 1}, optimizer step {step + 1} ({parts}); "
        f"training stopped and {kept}. Lower the learning rate or check the data."
    )
