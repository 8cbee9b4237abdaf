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
* AdamW's ``eps`` and ``beta2`` are ``TrainConfig.adam_eps`` / ``adam_beta2``; ``schedule``
  ``"bert_warmup_cosine"`` is BertAdam's (CLIP4Clip/SGMN ``optimization.py``): linear warmup
  from 0 over the first ``warmup_ratio`` of the run, and a cosine over the *whole* run's progress
  (``0.5 (1 + cos(pi x))``, x = step / total) after it; ``TrainConfig.updates``, when set, fixes the
  schedule's length in optimizer updates (the official RICE code's ``max_updates``), the number
  of epochs then following from the data size.
* Gradient clipping by global norm when ``grad_clip`` > 0; mixed precision on CUDA only (bf16 autocast where the
  GPU supports it, else fp16 with a ``GradScaler``); plain fp32 on the CPU.
* Randomness: the sampler shuffles with ``(seed, epoch)`` and every epoch re-seeds torch,
  NumPy and Python from ``(seed, epoch, rank)``, so an epoch is the same whether training ran
  straight through or resumed from a checkpoint. Data augmentation is seeded per item from
  ``(seed, epoch, index)`` (:mod:`benchmark.training.item_seeding`): the same whatever the world
  size, accumulation, worker count or resume point. With ``num_workers`` > 0 the map-style
  loader's workers persist across epochs (the sampler hands them the epoch with each index,
  :mod:`benchmark.training.epoch_loader`); their own seeds, drawn once, feed no item.
* The loader hands over uint8 pixels; :func:`to_device` copies a batch and normalises them there
  (:mod:`datasets.pixels`), so methods get the float input of ``methods/base.py``.
* ``torchrun``-ready: ``DistributedSampler(drop_last=True)`` so every rank sees equal
  batches (InfoNCE gathers negatives across ranks), DDP wrapping, rank 0 alone writes.
  ``group_batches="livestream"`` swaps in :class:`~benchmark.training.grouped_sampler.GroupedSampler`
  (chunks of one livestream per batch) under the same contract.
* ``method.set_epoch(epoch)`` (0-based) and ``method.on_epoch_start(epoch, epochs)`` are called before every epoch, resumed ones
  included. (Under DDP the set of parameters with ``requires_grad`` must not change
  between epochs: DDP fixes it when wrapping.)
* A checkpoint (:mod:`benchmark.training.checkpoint`, through
  :class:`~benchmark.training.state.TrainState`) is written atomically after every epoch, every
  ``checkpoint_every`` optimizer steps when set (``--checkpoint-every``; it holds the position
  in the epoch, every rank's RNG states and the epoch's running loss sums, so a resumed run
  ends bit-identical on the CPU) and when ``max_steps`` stops training mid-epoch.
* No step waits for the device: losses are summed on it
  (:class:`~benchmark.training.loss_meter.LossMeter`) and read every ``log_every`` optimizer
  steps (1 on the CPU, where a read is free; 50 on a GPU), before each checkpoint and at each
  epoch's end. A NaN/inf loss is caught at the next read and stops training with a
  :class:`NonFiniteLossError` naming the step where it first appeared; no checkpoint is written
  after it, so the last good one stays in place. On CUDA, batches are copied one ahead on a side
  stream (:mod:`benchmark.training.prefetch`) and AdamW is the fused kernel.
* Under DDP, ``find_unused_parameters`` (a graph walk every step) only for methods that do not
  declare ``every_parameter_used``, and ``static_graph`` for those that do (without gradient
  accumulation); gradients are the all-reduce buckets' views.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from benchmark.core.config import DataConfig, TrainConfig
from benchmark.core.prepared_collate import with_preparer
from benchmark.core.progress import StepProgress
from benchmark.training import checkpoint as ckpt
from benchmark.training.distributed import DistEnv
from benchmark.training.epoch_loader import EpochLoaders, StreamFactory
from benchmark.training.grouped_sampler import epoch_sampler
from benchmark.training.item_seeding import ItemSeededDataset
from benchmark.training.loop import NonFiniteLossError, RunClock, Trainer, TrainingError, autocast, train_one_epoch  # noqa: F401  (TrainingError, NonFiniteLossError, autocast: public here)
from benchmark.training.loss_meter import LossMeter
from benchmark.training.prefetch import DevicePrefetcher
from benchmark.training.seeding import seed_everything, set_rng_state
from benchmark.training.state import Stateful, TrainState, same_identity  # noqa: F401  (same_identity: public here)
from datasets.pixels import has_raw_pixels, normalise_pixels
from datasets.torch_data import PairDataset, collate_batch
from methods.base import Method


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


def bert_warmup_cosine(warmup_ratio: float, total_steps: int) -> Callable[[int], float]:
    """BertAdam's ``warmup_cosine`` at progress ``step / total_steps`` (0 at the first update)."""

    def factor(step: int) -> float:
        x = step / max(1, total_steps)
        if x < warmup_ratio:
            return x / warmup_ratio
        return 0.5 * (1.0 + math.cos(math.pi * x))

    return factor


def lr_schedule(cfg: TrainConfig, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The ``LambdaLR`` factor ``cfg.schedule`` names."""
    if cfg.schedule == "bert_warmup_cosine":
        return bert_warmup_cosine(cfg.warmup_ratio, total_steps)
    if cfg.schedule != "warmup_cosine":
        raise TrainingError(f"TrainConfig.schedule {cfg.schedule!r} is not warmup_cosine or bert_warmup_cosine")
    return warmup_cosine(warmup_steps, total_steps)


def build_optimizer(method: Method, cfg: TrainConfig, device: Optional[torch.device] = None) -> torch.optim.AdamW:
    """AdamW over the method's parameter groups; the fused kernel on CUDA (one launch for all
    parameters, no host sync), torch's default (foreach) implementation elsewhere."""
    groups = method.parameter_groups(cfg.lr_encoder, cfg.lr_new, cfg.weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TrainingError(f"{type(method).__name__} has no trainable parameters")
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    return torch.optim.AdamW(
        groups, lr=cfg.lr_new, weight_decay=cfg.weight_decay, eps=cfg.adam_eps, betas=(0.9, cfg.adam_beta2), **fused
    )


def amp_dtype_for(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it, else fp16; None (fp32) on the CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_device(batch: dict[str, Any], device: torch.device, data_cfg: Optional[DataConfig] = None) -> dict[str, Any]:
    """``batch``'s tensors on ``device``; uint8 pixels (as the DataLoader hands them over) then
    normalised there with ``data_cfg``'s mean/std (:func:`datasets.pixels.normalise_pixels`)."""
    non_blocking = device.type == "cuda"
    out = {k: v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if not has_raw_pixels(out):
        return out
    if data_cfg is None:
        raise ValueError("a batch with uint8 frames/image needs the data config's mean/std (to_device(..., data_cfg))")
    return normalise_pixels(out, data_cfg.mean, data_cfg.std)


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
    log_every: Optional[int] = None,
    stream: Optional[StreamFactory] = None,
    data_cfg: Optional[DataConfig] = None,
    persistent_workers: bool = True,
) -> TrainResult:
    """Train ``method`` on ``dataset`` (a PairDataset) under ``cfg``; return what happened.

    ``config`` is written to ``run_dir/config.json``; ``identity`` (method, dataset, profile,
    seed, overrides) must match the checkpoint's when ``resume`` is set. ``groups`` (one key per
    pair, e.g. its livestream) is required when ``cfg.group_batches`` is not "none".
    ``log_every``: optimizer steps between two host reads of the losses (and finiteness
    checks); default 1 on the CPU, where a read costs nothing, 50 on a GPU. ``stream`` (a sharded
    root) builds each epoch's stream of items in place of the sampler. ``data_cfg`` (default: a
    ``PairDataset``'s own) gives the mean/std that turn the loader's uint8 pixels into the model's
    float input on the device. ``persistent_workers``: with ``num_workers`` > 0, keep the
    map-style loader's workers across epochs (the same items either way).
    """
    collate = with_preparer(collate or collate_batch, method.batch_preparer())  # e.g. tokens, in the workers
    run_dir = Path(run_dir)
    n = len(dataset)  # type: ignore[arg-type]
    if stream is not None and cfg.group_batches != "none":
        raise TrainingError(
            f"group_batches={cfg.group_batches!r} needs the map-style sampler; a sharded root streams "
            "(prepare this root with --format files to group batches)"
        )
    if cfg.group_batches != "none" and (groups is None or len(groups) != n):
        raise TrainingError(f"group_batches={cfg.group_batches!r} needs one group key per training pair")
    tr, epochs = _build_trainer(method, n, cfg, env, run_dir, identity, log_every)
    if data_cfg is None and isinstance(dataset, PairDataset):
        data_cfg = dataset.cfg
    dataset = ItemSeededDataset(dataset, seed)  # augmentation = f(seed, epoch, item): rank/resume-proof
    loaders = EpochLoaders(
        dataset,
        micro_bs=tr.micro_bs,
        num_workers=num_workers,
        collate=collate,
        pin_memory=env.device.type == "cuda",
        persistent=persistent_workers,
    )
    feed = functools.partial(to_device, data_cfg=data_cfg)
    state = TrainState()
    if resume and ckpt.find_resumable(run_dir):
        state = TrainState.restore(run_dir, tr.objs, env, tr.split, identity)
    if env.is_main and config is not None:
        ckpt.save_config(run_dir, config)
    prog = StepProgress("train", tr.total_steps, enabled=show_progress and env.is_main)
    clock = RunClock(time.perf_counter())
    method.train()
    with prog:
        if state.resumed_from is not None:
            prog.log(f"resumed from {ckpt.checkpoint_path(run_dir)} at epoch {state.epoch}, step {state.step}")
        prog.update(state.step)
        while state.epoch < epochs and state.step < tr.total_steps:
            loader, meter = _start_epoch(tr, state, method, dataset, loaders, seed, groups, epochs, stream)
            batches = DevicePrefetcher(loader, env.device, feed)  # CUDA: copies one batch ahead, then normalises
            record = train_one_epoch(tr, state, batches, meter, prog, clock)
            prog.log(
                f"epoch {record['epoch']}/{epochs}  step {state.step}/{tr.total_steps}  "
                f"loss {record.get('loss', float('nan')):.4f}  {record['samples_per_s']:.1f} samples/s"
            )
    loaders.close()
    method.eval()
    wall = time.perf_counter() - clock.t_start
    return TrainResult(
        steps=state.step,
        epochs_completed=state.epoch,
        total_steps=tr.total_steps,
        history=state.history,
        samples_per_s=clock.samples / max(wall, 1e-9) if clock.samples else 0.0,
        wall_s=wall,
        checkpoint=state.last_checkpoint,
        resumed_from_step=state.resumed_from,
        per_process_batch=tr.micro_bs,
        grad_accum=tr.accum,
        world_size=env.world_size,
        amp_dtype=str(tr.amp).replace("torch.", "") if tr.amp is not None else None,
    )


def _build_trainer(
    method: Method,
    n: int,
    cfg: TrainConfig,
    env: DistEnv,
    run_dir: Path,
    identity: Optional[dict[str, Any]],
    log_every: Optional[int],
) -> tuple[Trainer, int]:
    """The schedule's length, the optimizer, scheduler, scaler and (DDP-)module; and the epochs."""
    device = env.device
    micro_bs = per_process_batch(cfg.batch_size, env.world_size, cfg.grad_accum)
    steps_per_epoch = ((n // env.world_size) // micro_bs) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise TrainingError(
            f"the training split has {n} pairs; one optimizer step needs a global batch of "
            f"{cfg.batch_size} (lower it with --batch-size, or use more data)"
        )
    total_steps, epochs = cfg.epochs * steps_per_epoch, cfg.epochs
    if cfg.updates is not None:  # a schedule in updates: as many epochs as they take
        total_steps = int(cfg.updates)
        epochs = -(-total_steps // steps_per_epoch)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, int(cfg.max_steps))
    warmup = int(round(cfg.warmup_ratio * total_steps))
    method.to(device)
    optimizer = build_optimizer(method, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg, warmup, total_steps))
    amp = amp_dtype_for(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    module: nn.Module = _LossForward(method)
    if env.distributed:
        module = wrap_ddp(module, method, device, cfg.grad_accum)
    every = log_every if log_every is not None else (1 if device.type == "cpu" else 50)
    tr = Trainer(
        Stateful(method, optimizer, scheduler, scaler),
        module,
        cfg,
        env,
        amp,
        micro_bs,
        cfg.grad_accum,
        steps_per_epoch,
        total_steps,
        run_dir,
        identity,
        max(1, int(every)),
    )
    return tr, epochs


def wrap_ddp(module: nn.Module, method: Method, device: torch.device, grad_accum: int = 1) -> DistributedDataParallel:
    """DDP over ``module``; the unused-parameter search (a graph walk every step) only for
    methods that leave parameters out of some steps (``Method.every_parameter_used``). Those
    that use every parameter every step also run with ``static_graph`` (the set of used
    parameters never changes, so DDP fixes its buckets after the first step), unless gradients
    are accumulated: a first step under ``no_sync`` fails DDP's static-graph recording (an
    internal assert in torch 2.14's reducer, reproduced with two gloo processes)."""
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=not method.every_parameter_used,
        gradient_as_bucket_view=True,
        static_graph=method.every_parameter_used and grad_accum == 1,
    )


def _start_epoch(
    tr: Trainer,
    state: TrainState,
    method: Method,
    dataset: ItemSeededDataset,
    loaders: EpochLoaders,
    seed: int,
    groups: Optional[Sequence[str]],
    epochs: int,
    stream: Optional[StreamFactory],
) -> tuple[Iterable[Any], LossMeter]:
    """Seed (or restore the RNG of a mid-epoch resume), call the epoch hooks, build the loader."""
    env, epoch, skip = tr.env, state.epoch, state.micro_in_epoch
    sampler = None
    if stream is None:
        sampler = epoch_sampler(
            len(dataset),
            tr.cfg.group_batches,
            tr.cfg.group_size,
            tr.micro_bs,
            num_replicas=env.world_size,
            rank=env.rank,
            seed=seed,
            groups=groups,
        )
        sampler.set_epoch(epoch)
    if skip and state.rng is not None:
        set_rng_state(state.rng)
    else:
        seed_everything(_epoch_seed(seed, epoch), rank=env.rank)
    partial = state.partial if skip else None
    state.rng = state.partial = None
    method.set_epoch(epoch)
    dataset.set_epoch(epoch)
    method.on_epoch_start(epoch, epochs)
    # persistent workers get the epoch with each index; a stream or num_workers=0 gets a fresh loader per epoch
    loader = loaders.epoch(
        epoch, sampler=sampler, stream=stream, skip_micro=skip, generator_seed=_epoch_seed(seed, epoch) + env.rank
    )
    meter = LossMeter(env.device, partial["sums"] if partial else None, int(partial["counted"]) if partial else 0)
    return loader, meter
