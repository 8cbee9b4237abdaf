"""Training batches drawn a few livestreams at a time, so in-batch negatives share a livestream.

LPR4M's test ranks a clip only against its own livestream's shop images, but a shuffled batch
of 32 from ~70 livestreams (lpr4m-synth; thousands on LPR4M) rarely holds two pairs of one
livestream, so a method that mines its hardest negatives in the batch (RICE's PMD) never
trains on the confusions the test asks it to resolve. With ``TrainConfig.group_batches =
"livestream"`` (``--group-batches livestream``) every run of ``group_size`` consecutive
training indices comes from one livestream: each epoch shuffles the pairs within each
livestream, cuts them into chunks of ``group_size`` (a livestream's remainder joins a pool
cut into mixed chunks), and shuffles the chunks. A batch of B pairs then holds B /
``group_size`` livestreams. This is not in any official code; it is the harness's tool for
RICE's second-stage analysis, off by default.

The sampler replaces ``DistributedSampler`` with the same contract: seeded by ``(seed,
epoch)`` through :meth:`set_epoch`, every rank the same count: whole micro-batches only (the
loader drops a partial one anyway, so the steps per epoch are ``DistributedSampler``'s).
Micro-batch ``j`` of the global order goes to rank ``j % world_size``, so a chunk stays on one
rank when ``group_size`` divides the per-process batch.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

import torch
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

GROUPINGS = ("none", "livestream")


class GroupedSampler(Sampler[int]):
    """Indices in chunks of ``group_size`` sharing a group key (``groups[i]`` for index ``i``)."""

    def __init__(
        self,
        groups: Sequence[str],
        group_size: int,
        micro_batch: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        if group_size < 1 or micro_batch < 1:
            raise ValueError(f"group_size and micro_batch must be >= 1, got {group_size} and {micro_batch}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.groups = list(groups)
        self.group_size, self.micro_batch = int(group_size), int(micro_batch)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups) // (self.num_replicas * self.micro_batch) * self.micro_batch

    def global_order(self) -> list[int]:
        """Every index once, in chunks of ``group_size`` from one group (mixed for the remainders)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        by_key: dict[str, list[int]] = {}
        for i, key in enumerate(self.groups):
            by_key.setdefault(key, []).append(i)
        chunks: list[list[int]] = []
        pool: list[int] = []
        for key in sorted(by_key):
            idx = by_key[key]
            idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            full = len(idx) - len(idx) % self.group_size
            chunks += [idx[s : s + self.group_size] for s in range(0, full, self.group_size)]
            pool += idx[full:]
        pool = [pool[j] for j in torch.randperm(len(pool), generator=g).tolist()]
        chunks += [pool[s : s + self.group_size] for s in range(0, len(pool), self.group_size)]
        return [i for c in torch.randperm(len(chunks), generator=g).tolist() for i in chunks[c]]

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()[: len(self) * self.num_replicas]
        step = self.num_replicas * self.micro_batch
        return iter(
            [i for s in range(self.rank * self.micro_batch, len(order), step) for i in order[s : s + self.micro_batch]]
        )


def epoch_sampler(
    num_items: int,
    grouping: str,
    group_size: int,
    micro_batch: int,
    *,
    num_replicas: int,
    rank: int,
    seed: int,
    groups: Optional[Sequence[str]] = None,
) -> Union[DistributedSampler, GroupedSampler]:
    """The training sampler ``grouping`` names: ``DistributedSampler(shuffle, drop_last)`` for "none",
    else a :class:`GroupedSampler` over ``groups`` (one key per item)."""
    if grouping == "none":
        return DistributedSampler(
            range(num_items), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    if grouping not in GROUPINGS or groups is None or len(groups) != num_items:
        raise ValueError(f"grouping {grouping!r} needs one group key per item ({num_items})")
    return GroupedSampler(groups, group_size, micro_batch, num_replicas=num_replicas, rank=rank, seed=seed)
