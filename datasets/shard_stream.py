"""Training pairs streamed whole-clip from the tar shards of a sharded root (``prepare --format
webdataset``), the way OpenCLIP trains LAION from img2dataset's shards with ``webdataset``.

Per epoch, the training shards (each training clip belongs to the shard holding its first frame
read at T) are shuffled with ``Random((seed, epoch))``, the same order on every rank, then split
by DDP rank (``webdataset.split_by_node``: shard ``k`` goes to rank ``k mod world``) and by
DataLoader worker (``webdataset.split_by_worker``), so no two ranks read the same clip in an epoch.
A worker reads its shards sequentially (``webdataset.tarfile_to_samples``), keeps the members a
clip reads at T (:func:`datasets.frame_selection.clip_positions`, the tail cut keeps a prefix of
them), emits a clip's pairs once all its frames arrived (frames spilling into the next shard, or a
clip whose shard order differs, are read by seeking, :mod:`datasets.shard_store`), shuffles the
pairs with a buffer (``webdataset.shuffle``, ``Random((seed, epoch, rank, worker))``) and loads
each through the same dataset item as the files layout (same tail cut, crop, flip, item seeds:
``benchmark.training.item_seeding``) with the streamed bytes in place of file reads
(:func:`datasets.decoding.preloaded`).

Departures from the files layout's ``DistributedSampler`` (a permutation of all pairs, cut into
equal rank shares): an epoch is ``num_items`` pairs per rank (the engine's steps); a worker
cycles its shards, reshuffled, until the engine stops reading, so a rank whose shards hold fewer
pairs repeats some, and one whose shards hold more leaves some for a later epoch (webdataset's
``with_epoch`` practice). The stream is a function of (seed, epoch, rank, worker, number of
workers): resuming at an epoch boundary gives the same batches; a mid-epoch resume replays
(reads, decodes and drops) the epoch's first micro-batches with the same number of workers.
A corrupt or truncated shard stops the run with one line naming it (never skipped silently).
"""

from __future__ import annotations

import random
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import webdataset as wds
from torch.utils.data import IterableDataset

from datasets.decoding import preloaded
from datasets.errors import DataError
from datasets.frame_selection import clip_positions
from datasets.records import TrainPair
from datasets.shard_store import CORRUPT_SHARD, read_path, split_member, verify_shard

SHUFFLE_BUFFER = 256  # pairs held for the buffer shuffle (about 10 frames of ~20 KB each)


def _read(path: Path) -> bytes:
    try:
        return read_path(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing (not in its shard)", path=path, kind=CORRUPT_SHARD) from None


def clip_members(pair: TrainPair, num_frames: int) -> list[Path]:
    """The member paths a training item of ``pair`` can read at T (before the tail cut)."""
    return [pair.clip.frame_paths[p] for p in clip_positions(pair.clip, num_frames)]


def shard_owners(pairs: Sequence[TrainPair], num_frames: int) -> dict[str, list[int]]:
    """{shard path: pair indices} with each pair owned by the shard of its first member read at T."""
    owners: dict[str, list[int]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        members = clip_members(pair, num_frames)
        if not members or split_member(members[0]) is None:
            raise DataError(
                f"pair {pair.clip.clip_id} / {pair.image_id}: its frames are not in shards "
                f"(streaming needs a root prepared with --format webdataset)",
                kind=CORRUPT_SHARD,
            )
        owners[str(split_member(members[0])[0])].append(i)
    return dict(owners)


class ShardPairStream(IterableDataset):
    """One epoch's stream of training items of one rank (see the module doc). ``items`` is the
    map-style dataset (``ItemSeededDataset`` over a ``PairDataset``) whose ``[i]`` loads pair i."""

    def __init__(
        self,
        items: Any,
        pairs: Sequence[TrainPair],
        num_frames: int,
        *,
        seed: int,
        epoch: int,
        buffer: int = SHUFFLE_BUFFER,
        owners: Optional[dict[str, list[int]]] = None,
    ) -> None:
        self.items, self.pairs, self.num_frames = items, list(pairs), num_frames
        self.seed, self.epoch, self.buffer = int(seed), int(epoch), int(buffer)
        self.owners = owners if owners is not None else shard_owners(self.pairs, num_frames)

    def shard_order(self) -> list[str]:
        order = sorted(self.owners)
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        return order

    def _clips(self, shards: list[str]) -> Iterator[tuple[int, dict[Path, bytes]]]:
        """(pair index, {member path: bytes}) of every pair owned by ``shards``, in shard order."""
        for shard in shards:
            need: dict[int, list[Path]] = {i: clip_members(self.pairs[i], self.num_frames) for i in self.owners[shard]}
            waiting: dict[Path, list[int]] = defaultdict(list)
            for i, members in need.items():
                for m in members:
                    waiting[m].append(i)
            got: dict[int, dict[Path, bytes]] = defaultdict(dict)
            emitted: set[int] = set()
            try:
                for sample in wds.tarfile_to_samples()([{"url": shard}]):
                    path = Path(shard) / f"{sample['__key__']}.jpg"
                    for i in waiting.get(path, ()):
                        got[i][path] = sample["jpg"]
                        if len(got[i]) == len(need[i]):
                            emitted.add(i)
                            yield i, got.pop(i)
            except (tarfile.TarError, OSError, ValueError) as e:  # webdataset re-raises tar errors as they come
                raise DataError(
                    f"{shard}: corrupt or truncated shard ({type(e).__name__}: {e})", path=shard, kind=CORRUPT_SHARD
                ) from None
            fault = verify_shard(Path(shard))  # tarfile ends quietly at a bad header: check the shard ended whole
            if fault is not None:
                raise DataError(
                    f"{shard}: {fault}; the run stops (check-data names every bad shard)",
                    path=shard,
                    kind=CORRUPT_SHARD,
                )
            for i in need:  # frames spilled into the next shard, or missing: read by seeking (or fail naming them)
                if i not in emitted:
                    have = got.pop(i, {})
                    yield i, {m: have[m] if m in have else _read(m) for m in need[i]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.shard_order()
        mine = list(wds.split_by_worker(wds.split_by_node(order)))
        if not mine:
            return
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        self.items.set_epoch(self.epoch)
        cycle = 0
        while True:
            rng = random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}/{cycle}")
            shards = list(mine)
            if cycle:
                rng.shuffle(shards)
            shuffle = wds.shuffle(bufsize=self.buffer, initial=min(self.buffer, 64), rng=rng)
            for i, data in shuffle(self._clips(shards)):
                with preloaded(data):
                    yield self.items[i]
            cycle += 1


def stream_factory(
    pairs: Sequence[TrainPair], num_frames: int, seed: int
) -> Optional[Callable[[Any, int], ShardPairStream]]:
    """The per-epoch stream builder for pairs whose frames are shard members (a sharded root); None
    for the files layout (trained map-style)."""
    if not pairs or not pairs[0].clip.frame_paths or split_member(pairs[0].clip.frame_paths[0]) is None:
        return None
    owners = shard_owners(pairs, num_frames)  # checked once here, before any worker starts

    def build(items: Any, epoch: int) -> ShardPairStream:
        return ShardPairStream(items, pairs, num_frames, seed=seed, epoch=epoch, owners=owners)

    return build
