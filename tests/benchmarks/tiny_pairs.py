"""What the speed benchmarks share: ``lpr4m-synth`` (tiny size) training pairs under the tiny
profile, and the timing of bare optimizer steps on one batch."""

from __future__ import annotations

import time

import torch

from benchmark.cli.run_setup import SYNTH_DATA_SEED, data_info
from benchmark.core.config import PROFILES, Profile, RunConfig
from benchmark.core.registry import DATASETS, load_all
from benchmark.training.engine import to_device
from datasets.torch_data import PairDataset, collate_batch
from methods.base import DataInfo


def tiny_pairs(batch_size: int) -> tuple[PairDataset, DataInfo, Profile, dict]:
    """The training pairs, their DataInfo (the runner's), the tiny profile and one collated batch
    (its uint8 pixels normalised, as ``engine.to_device`` does after the copy)."""
    load_all()
    splits = DATASETS.get("lpr4m-synth")(None, size="tiny", seed=SYNTH_DATA_SEED)
    prof = PROFILES["tiny"]
    info, products, cats = data_info(splits, RunConfig(method="", dataset="lpr4m-synth", profile=prof))
    data = PairDataset(splits.train, prof.data, products, cats, train=True)
    host = collate_batch([data[i % len(data)] for i in range(batch_size)])
    batch = to_device(host, torch.device("cpu"), prof.data)  # the model's float input, as the engine feeds it
    return data, info, prof, batch


def bare_pairs_per_s(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, steps: int) -> float:
    """Pairs per second of ``steps`` forward + backward + optimizer steps of ``model`` on ``batch``."""
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = sum(model.training_losses(batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch["frames"].shape[0] / (time.perf_counter() - t0)
