"""One epoch's DataLoader: map-style pairs through the epoch's sampler, or a stream of pairs.

The files layout trains map-style: a ``DistributedSampler`` (or the livestream-grouped sampler)
permutes the pairs and a mid-epoch resume skips the first sampled indices. A sharded root
(``prepare --format webdataset``) streams whole clips from its tar shards
(:class:`datasets.shard_stream.ShardPairStream`, built per epoch by ``stream``): the DataLoader
reads the stream, and a mid-epoch resume replays the epoch's first ``skip_micro`` micro-batches
(read, decoded and dropped; exact with the same number of workers, see that module).

With worker processes, map-style training keeps one DataLoader and its workers for the whole
run (:class:`EpochLoaders`, ``persistent_workers``): its :class:`EpochSampler` yields
``(epoch, index)``, so the item seeding (:mod:`benchmark.training.item_seeding`) sees the epoch
in workers started epochs earlier, and every item is augmented exactly as a fresh per-epoch
loader would augment it (worker seeds play no part: each item is drawn under its own seed).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, Optional

from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from benchmark.training.seeding import make_generator, worker_init_fn

_PREFETCH = 2  # micro-batches in flight per worker (torch's default, stated)

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


class EpochSampler(Sampler[tuple[int, int]]):
    """The current epoch's sampler as ``(epoch, index)`` pairs, its first ``skip`` indices left out.

    One object for the whole run (a persistent DataLoader keeps its sampler); :meth:`set` points
    it at the next epoch before that epoch's iteration starts, in the main process."""

    def __init__(self) -> None:
        self.base: Optional[Sampler[int]] = None
        self.epoch = 0
        self.skip = 0

    def set(self, base: Sampler[int], epoch: int, skip: int) -> None:
        self.base, self.epoch, self.skip = base, int(epoch), int(skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.base is None:
            raise RuntimeError("EpochSampler.set was not called before iterating")
        epoch, indices = self.epoch, itertools.islice(iter(self.base), self.skip, None)  # bound now, not later
        return ((epoch, int(i)) for i in indices)

    def __len__(self) -> int:
        return 0 if self.base is None else max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


class EpochLoaders:
    """Each epoch's micro-batches; with ``num_workers`` > 0 and ``persistent`` on a map-style
    dataset, one DataLoader whose workers outlive the epochs (no worker start-up, dataset pickling
    or frame-cache reopening per epoch), else :func:`epoch_loader`'s fresh loader per epoch."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        micro_bs: int,
        num_workers: int,
        collate: Callable[..., Any],
        pin_memory: bool,
        persistent: bool = True,
    ) -> None:
        self.dataset, self.micro_bs, self.num_workers = dataset, micro_bs, num_workers
        self.collate, self.pin_memory = collate, pin_memory
        self.persistent = persistent and num_workers > 0
        self.sampler = EpochSampler()
        self.loader: Optional[DataLoader] = None

    def epoch(
        self,
        epoch: int,
        *,
        sampler: Optional[Sampler[int]],
        stream: Optional[StreamFactory],
        skip_micro: int,
        generator_seed: int,
    ) -> Iterable[Any]:
        """The micro-batches of ``epoch``, its first ``skip_micro`` left out."""
        if stream is not None or not self.persistent:
            return epoch_loader(
                self.dataset,
                epoch,
                sampler=sampler,
                stream=stream,
                skip_micro=skip_micro,
                micro_bs=self.micro_bs,
                num_workers=self.num_workers,
                collate=self.collate,
                pin_memory=self.pin_memory,
                generator_seed=generator_seed,
            )
        assert sampler is not None
        self.sampler.set(sampler, epoch, skip_micro * self.micro_bs)
        if self.loader is None:
            self.loader = DataLoader(
                self.dataset,
                batch_size=self.micro_bs,
                sampler=self.sampler,
                num_workers=self.num_workers,
                collate_fn=self.collate,
                drop_last=True,
                pin_memory=self.pin_memory,
                worker_init_fn=worker_init_fn,
                generator=make_generator(generator_seed),
                persistent_workers=True,
                prefetch_factor=_PREFETCH,
            )
        return self.loader

    def close(self) -> None:
        """Drop this object's hold on the loader; its workers end once no iterator of it is left
        (the engine's epoch loop holds one until ``train`` returns) or when it is collected."""
        self.loader = None
