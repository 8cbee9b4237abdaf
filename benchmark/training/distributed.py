"""Process-group set-up for single-process and ``torchrun`` runs, and the helpers around it.

``torchrun --nproc_per_node N run_benchmark.py ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the group (``nccl`` on CUDA, ``gloo`` on
the CPU) and pins each process to ``cuda:LOCAL_RANK``. Without those variables everything is
a no-op and the run is one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Rank 0 alone ranks and re-ranks after evaluation; the others wait at a barrier meanwhile,
# which for a second-stage re-ranker over a large gallery can take far longer than the
# default collective timeout.
_TIMEOUT = timedelta(hours=6)


class DeviceError(RuntimeError):
    pass


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs: its rank in the group and its torch device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if pref not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"unknown device {pref!r}; choose auto, cpu or cuda")
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_pref: str = "auto") -> DistEnv:
    """Join the ``torchrun`` process group if there is one; return this process's place."""
    world = env_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world <= 1:
        return DistEnv(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def current_env(device: torch.device | None = None) -> DistEnv:
    """The :class:`DistEnv` of an already-initialised group (or of one process)."""
    device = device or torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), device)
    return DistEnv(device=device)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.device.index or 0])
        else:
            dist.barrier()


def all_true(flag: bool, env: DistEnv) -> bool:
    """True when ``flag`` holds on every rank (one all-reduce; the flag itself locally)."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def all_gather_cat(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate equally-shaped ``x`` from every rank along dim 0, in rank order."""
    if not env.distributed:
        return x
    local = x.to(env.device).contiguous()
    parts = [torch.empty_like(local) for _ in range(env.world_size)]
    dist.all_gather(parts, local)
    return torch.cat([p.cpu() for p in parts], dim=0)


def mean_across_ranks(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Each value averaged over the ranks (one all-reduce); every rank must pass the same keys."""
    if not env.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / env.world_size for k, v in zip(keys, t.tolist())}


def all_gather_object(obj, env: DistEnv) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not env.distributed:
        return [obj]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, env: DistEnv, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (``obj`` is ignored elsewhere)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=env.device if env.device.type == "cuda" else None)
    return box[0]


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
