"""The training data the speed benchmarks share: ``lpr4m-synth`` (tiny size) under the tiny profile."""

from __future__ import annotations

from benchmark.config import PROFILES, Profile, RunConfig
from benchmark.registry import DATASETS, load_all
from benchmark.runner import SYNTH_DATA_SEED, data_info
from datasets.torch_data import PairDataset, collate_batch
from methods.base import DataInfo


def tiny_pairs(batch_size: int) -> tuple[PairDataset, DataInfo, Profile, dict]:
    """The training pairs, their DataInfo (the runner's), the tiny profile and one collated batch."""
    load_all()
    splits = DATASETS.get("lpr4m-synth")(None, size="tiny", seed=SYNTH_DATA_SEED)
    prof = PROFILES["tiny"]
    info, products, cats = data_info(splits, RunConfig(method="", dataset="lpr4m-synth", profile=prof))
    data = PairDataset(splits.train, prof.data, products, cats, train=True)
    batch = collate_batch([data[i % len(data)] for i in range(batch_size)])
    return data, info, prof, batch
