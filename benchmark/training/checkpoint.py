"""Training checkpoints: one atomic file per run directory, loadable with ``weights_only=True``.

``last.pt`` holds the model, optimizer, scheduler and grad-scaler states, the RNG states
(:mod:`benchmark.training.seeding`; ``rng`` of rank 0 and ``rng_per_rank``), the position in training
(``epoch`` = completed epochs, ``step`` = optimizer steps, ``micro_in_epoch`` = micro-batches
consumed in the unfinished epoch, under ``batch_split``), the unfinished epoch's running loss
sums per rank (``epoch_partial``) and the loss history. ``config.json`` beside it holds the
resolved run config. The engine writes and reads it through
:class:`benchmark.training.state.TrainState`. A write replaces the previous file atomically, so the last good
checkpoint always survives; a file that is not one, or that holds pickled code, is refused
(:mod:`benchmark.core.safe_load`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from benchmark.core.atomic import atomic_torch_save, atomic_write_json
from benchmark.core.safe_load import UnsafeOrCorruptFile, safe_torch_load

CHECKPOINT_NAME = "last.pt"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format version) to ``run_dir/last.pt`` atomically."""
    payload = {"format_version": FORMAT_VERSION, **state}
    return atomic_torch_save(checkpoint_path(run_dir), payload)


def save_config(run_dir: Path, config: dict[str, Any]) -> Path:
    return atomic_write_json(Path(run_dir) / CONFIG_NAME, config)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain types only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        state = safe_torch_load(path, map_location)
    except UnsafeOrCorruptFile as exc:  # truncated, not a torch file, or unsafe pickled objects
        raise CheckpointError(f"{path}: not a loadable checkpoint: {exc.reason}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an LPR-Bench checkpoint (format_version {FORMAT_VERSION} expected)")
    for key in ("model", "optimizer", "scheduler", "epoch", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return state


def find_resumable(run_dir: Path) -> Optional[Path]:
    p = checkpoint_path(run_dir)
    return p if p.is_file() else None


def load_model_weights(model: torch.nn.Module, path: Path, *, allow_unused: bool = False) -> list[str]:
    """Load the model weights of checkpoint ``path`` into ``model``; return the unused keys.

    Every parameter and buffer of ``model`` must be in the checkpoint with its shape. Keys the
    model has no place for (say, the detector of a run evaluated with ground-truth boxes) are
    refused unless ``allow_unused``, and then returned so the caller can say what was left out.
    """
    path = Path(path)
    state = load_checkpoint(path)["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    unused = sorted(k for k in state if k not in own)
    if missing or shapes or (unused and not allow_unused):
        faults = [
            f"missing {len(missing)} ({', '.join(missing[:3])})" if missing else "",
            f"shape mismatch {len(shapes)} ({'; '.join(shapes[:3])})" if shapes else "",
            f"unexpected {len(unused)} ({', '.join(unused[:3])})" if unused and not allow_unused else "",
        ]
        raise CheckpointError(
            f"{path}: its weights do not fit this model: {', '.join(f for f in faults if f)}; "
            "pass the settings (--profile, --set) the checkpoint was trained with"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    return unused
