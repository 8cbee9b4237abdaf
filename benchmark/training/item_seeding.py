"""Per-item data randomness: an item's augmentation depends on (seed, epoch, item) only.

The transforms in :mod:`datasets` (tail cut, random resized crop, flip) draw from the global
torch generator. Left alone, what item ``i`` looks like in epoch ``e`` would then depend on
everything drawn before it in the same process: how many ranks share the epoch, how the
micro-batches are cut, which DataLoader worker loads it, and whether training resumed from a
checkpoint in the middle of the epoch. :class:`ItemSeededDataset` removes that dependence:
around each ``__getitem__`` it seeds torch, NumPy and Python ``random`` from
``hash(seed, epoch, index)`` and afterwards puts the caller's generator states back, so

* a 2-process (DDP) run sees exactly the augmented items a 1-process run sees, batch for
  batch (the distributed sampler puts the same items in each global batch);
* gradient accumulation, worker count and worker assignment change nothing;
* a run resumed mid-epoch re-creates the remaining items bit for bit;
* model-side randomness (dropout) keeps its own per-rank stream, untouched by data loading.

The epoch travels with the index when the sampler yields ``(epoch, index)`` pairs
(:class:`benchmark.training.epoch_loader.EpochSampler`): persistent DataLoader workers hold a
copy of the dataset made when they started, so an epoch set later in the main process
(:meth:`ItemSeededDataset.set_epoch`) would never reach them.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import Dataset


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for item ``index`` in ``epoch`` of a run seeded with ``seed``."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(epoch)}/{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ItemSeededDataset(Dataset):
    """Wraps ``base`` so that item ``i`` is drawn under the seed ``item_seed(seed, epoch, i)``.

    The key is ``index`` (the epoch is the one :meth:`set_epoch` last set; call it before the
    DataLoader is built, so worker processes receive it) or ``(epoch, index)`` (the epoch carried
    by the sampler; what persistent workers need). Other attributes are forwarded to ``base``.
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        s = item_seed(self.seed, epoch, index)
        py_state = random.getstate()
        np_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % 2**32)
            try:
                return self.base[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "seed", "epoch"):  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.base, name)
