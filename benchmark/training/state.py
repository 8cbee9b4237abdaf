"""Where a training run stands, as one object that saves to and restores from its checkpoint.

:class:`TrainState` is the engine's position (completed epochs, optimizer steps, micro-batches
consumed in the unfinished epoch), the loss history, and, after a mid-epoch resume, this rank's
RNG state and running loss sums to continue from. :meth:`TrainState.save` writes it with the
model, optimizer, scheduler and grad-scaler states (:mod:`benchmark.training.checkpoint`);
:meth:`TrainState.restore` reads it back and loads those states, refusing another run's
checkpoint or a mid-epoch one written under another batch split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from benchmark.training import checkpoint as ckpt
from benchmark.training.distributed import DistEnv, all_gather_object
from benchmark.training.seeding import rng_state


def same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two run identities are the same run; a key set to None counts as absent (checkpoints
    written while ``initial_weights`` was always recorded, as None when unused, still resume)."""

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}

    return strip(a) == strip(b)


@dataclass
class Stateful:
    """The objects whose states a checkpoint holds besides the position."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    micro_in_epoch: int = 0  # micro-batches consumed in the unfinished epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: Optional[int] = None
    rng: Optional[dict[str, Any]] = None  # this rank's RNG state, to restore at a mid-epoch resume
    partial: Optional[dict[str, Any]] = None  # this rank's running loss sums of the unfinished epoch
    last_checkpoint: Optional[Path] = None

    @classmethod
    def restore(
        cls, run_dir: Path, objs: Stateful, env: DistEnv, split: dict[str, int], identity: Optional[dict[str, Any]]
    ) -> "TrainState":
        """The state of ``run_dir``'s checkpoint, with ``objs`` loaded from it."""
        path = ckpt.checkpoint_path(run_dir)
        state = ckpt.load_checkpoint(path)
        if (
            identity is not None
            and state.get("identity") is not None
            and not same_identity(state["identity"], identity)
        ):
            raise ckpt.CheckpointError(
                f"{path}: belongs to another run ({state.get('identity')}), "
                f"not {identity}; drop --resume or pick another --output-dir"
            )
        lambdas = objs.scheduler.lr_lambdas  # the schedule of this run, not the pickled one
        objs.model.load_state_dict(state["model"])
        objs.optimizer.load_state_dict(state["optimizer"])
        objs.scheduler.load_state_dict(state["scheduler"])
        objs.scheduler.lr_lambdas = lambdas
        if state.get("scaler"):
            objs.scaler.load_state_dict(state["scaler"])
        micro = int(state.get("micro_in_epoch", 0))
        if micro and state.get("batch_split") not in (None, split):
            raise ckpt.CheckpointError(
                f"{path}: stopped mid-epoch under {state['batch_split']}; resuming there needs the same "
                f"processes and batch split, not {split} (or resume from an epoch-end checkpoint)"
            )
        per_rank = state.get("rng_per_rank")
        rng = per_rank[env.rank] if per_rank and len(per_rank) == env.world_size else state.get("rng")
        parts = state.get("epoch_partial") if micro else None
        partial = parts[env.rank] if isinstance(parts, list) and len(parts) == env.world_size else None
        return cls(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            micro_in_epoch=micro,
            history=list(state.get("history", [])),
            resumed_from=int(state["step"]),
            rng=rng if micro else None,
            partial=partial,
            last_checkpoint=path,
        )

    def save(
        self,
        run_dir: Path,
        objs: Stateful,
        env: DistEnv,
        split: dict[str, int],
        identity: Optional[dict[str, Any]],
        sums: Optional[dict[str, float]] = None,
        counted: int = 0,
    ) -> None:
        """Write the checkpoint (a collective: every rank calls it; rank 0 writes).

        ``sums``/``counted``: the unfinished epoch's running loss sums (mid-epoch saves)."""
        ranks = all_gather_object((rng_state(), {"sums": dict(sums or {}), "counted": counted}), env)
        if not env.is_main:
            return
        self.last_checkpoint = ckpt.save_checkpoint(
            run_dir,
            {
                "model": objs.model.state_dict(),
                "optimizer": objs.optimizer.state_dict(),
                "scheduler": objs.scheduler.state_dict(),
                "scaler": objs.scaler.state_dict(),
                "rng": ranks[0][0],
                "rng_per_rank": [r[0] for r in ranks],
                "epoch_partial": [r[1] for r in ranks] if self.micro_in_epoch else None,
                "epoch": self.epoch,
                "step": self.step,
                "micro_in_epoch": self.micro_in_epoch,
                "history": self.history,
                "identity": identity,
                "batch_split": split,
            },
        )
