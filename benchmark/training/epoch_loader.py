"""One epoch's DataLoader: map-style pairs through the epoch's sampler, or a stream of pairs.

The files layout trains map-style: a ``DistributedSampler`` (or the livestream-grouped sampler)
permutes the pairs and a mid-epoch resume skips the first sampled indices. A sharded root
(``prepare --format webdataset``) streams whole clips from its tar shards
(:class:`datasets.shard_stream.ShardPairStream`, built per epoch by ``stream``): the DataLoader
reads the stream, and a mid-epoch resume replays the epoch's first ``skip_micro`` micro-batches
(read, decoded and dropped; exact with the same number of workers, see that module).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, Optional

from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from benchmark.training.seeding import make_generator, worker_init_fn

StreamFactory = Callable[[Dataset, int], IterableDataset]  # (item dataset, epoch) -> the epoch's stream


class SkipSampler(Sampler[int]):
    """``base`` without its first ``skip`` indices (to resume mid-epoch)."""

    def __init__(self, base: Sampler[int], skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


def epoch_loader(
    dataset: Dataset,
    epoch: int,
    *,
    sampler: Optional[Sampler[int]],
    stream: Optional[StreamFactory],
    skip_micro: int,
    micro_bs: int,
    num_workers: int,
    collate: Callable[..., Any],
    pin_memory: bool,
    generator_seed: int,
) -> Iterable[Any]:
    """The epoch's micro-batches, the first ``skip_micro`` left out."""
    common = dict(
        batch_size=micro_bs,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn,
        generator=make_generator(generator_seed),
    )
    if stream is not None:
        loader = DataLoader(stream(dataset, epoch), **common)
        return itertools.islice(loader, skip_micro, None) if skip_micro else loader
    assert sampler is not None
    return DataLoader(dataset, sampler=SkipSampler(sampler, skip_micro * micro_bs) if skip_micro else sampler, **common)
