"""Training batches grouped by livestream (``--group-batches livestream``): the sampler's order,
its split across ranks, the engine's batches, the runner's keys and the ``live`` field."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.core.config import PROFILES, TrainConfig
from benchmark.record import config_diff
from benchmark.training import engine
from benchmark.training.distributed import DistEnv
from benchmark.training.grouped_sampler import GroupedSampler
from datasets.records import livestream_of
from tests.toy_methods import RegressionData, ToyRegression

# 5 livestreams of 13, 9, 6, 4 and 1 pairs, interleaved
KEYS = [
    f"L{i % 5}"
    for i in range(40)
    if not (i % 5 == 4 and i > 4) and not (i % 5 == 3 and i > 18) and not (i % 5 == 2 and i > 28)
]


def _chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[s : s + size] for s in range(0, len(order), size)]


def test_every_index_once_in_chunks_of_one_livestream() -> None:
    counts = Counter(KEYS)
    s = GroupedSampler(KEYS, group_size=4, micro_batch=8, seed=3)
    order = s.global_order()
    assert sorted(order) == list(range(len(KEYS)))
    pure = [c for c in _chunks(order, 4) if len(c) == 4 and len({KEYS[i] for i in c}) == 1]
    assert len(pure) == sum(n // 4 for n in counts.values())  # every livestream's full chunks, intact
    assert s.global_order() == order  # seeded by (seed, epoch)
    s.set_epoch(1)
    assert s.global_order() != order
    assert GroupedSampler(KEYS, 4, 8, seed=4).global_order() != order


def test_a_shuffled_batch_rarely_holds_a_livestream_twice_but_a_grouped_one_always_does() -> None:
    keys = [f"L{i % 70}" for i in range(70 * 42)]  # lpr4m-synth's shape: 70 livestreams of 42 pairs
    s = GroupedSampler(keys, group_size=8, micro_batch=32)
    batches = _chunks(list(s), 32)
    assert all(max(Counter(keys[i] for i in b).values()) >= 8 for b in batches)
    g = torch.Generator().manual_seed(0)
    shuffled = _chunks(torch.randperm(len(keys), generator=g).tolist(), 32)
    assert sum(max(Counter(keys[i] for i in b).values()) >= 8 for b in shuffled) == 0


def test_ranks_get_equal_disjoint_whole_micro_batches() -> None:
    ranks = [GroupedSampler(KEYS, 4, 4, num_replicas=2, rank=r, seed=0) for r in range(2)]
    got = [list(r) for r in ranks]
    assert len(got[0]) == len(got[1]) == len(ranks[0]) == len(KEYS) // 8 * 4
    assert not set(got[0]) & set(got[1])
    order = ranks[0].global_order()
    for r in range(2):  # micro-batch j of the global order goes to rank j % 2, whole
        assert got[r] == [i for j, c in enumerate(_chunks(order, 4)) if j % 2 == r for i in c][: len(got[r])]
    with pytest.raises(ValueError, match="rank 2"):
        GroupedSampler(KEYS, 4, 4, num_replicas=2, rank=2)


class _Recorder(ToyRegression):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[int]] = []

    def training_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.batches.append(batch["index"].tolist())
        return super().training_losses(batch)


def test_the_engine_trains_on_grouped_batches(tmp_path: Path) -> None:
    cfg = TrainConfig(
        epochs=2,
        batch_size=8,
        lr_encoder=1e-2,
        lr_new=1e-2,
        warmup_ratio=0.0,
        amp=False,
        group_batches="livestream",
        group_size=4,
    )
    groups = [f"L{i // 8}" for i in range(32)]
    m = _Recorder()
    engine.train(m, RegressionData(32), cfg, env=DistEnv(), run_dir=tmp_path / "g", groups=groups, show_progress=False)
    assert len(m.batches) == 8
    for b in m.batches:
        assert [len({groups[i] for i in c}) for c in _chunks(b, 4)] == [1, 1]
    plain = _Recorder()
    engine.train(
        plain,
        RegressionData(32),
        dataclasses.replace(cfg, group_batches="none"),
        env=DistEnv(),
        run_dir=tmp_path / "p",
        show_progress=False,
    )
    assert any(len({groups[i] for i in c}) > 1 for b in plain.batches for c in _chunks(b, 4))
    with pytest.raises(engine.TrainingError, match="one group key per training pair"):
        engine.train(_Recorder(), RegressionData(32), cfg, env=DistEnv(), run_dir=tmp_path / "x", show_progress=False)


def test_runner_keys_pairs_by_livestream_and_refuses_a_global_gallery(synth_lpr4m, synth_movingfashion) -> None:
    from benchmark.cli.run_setup import batch_groups
    from benchmark.core.config import RunConfig

    profile = dataclasses.replace(
        PROFILES["tiny"], train=dataclasses.replace(PROFILES["tiny"].train, group_batches="livestream")
    )
    cfg = RunConfig(method="rice", dataset="lpr4m-synth", profile=profile)
    keys = batch_groups(cfg, synth_lpr4m)
    assert keys == [p.clip.clip_id.rsplit("-", 2)[0] for p in synth_lpr4m.train]
    assert len(set(keys)) > 1 and len(set(keys)) < len(keys)
    assert batch_groups(dataclasses.replace(cfg, profile=PROFILES["tiny"]), synth_lpr4m) is None
    with pytest.raises(engine.TrainingError, match="movingfashion-synth.*no livestreams"):
        batch_groups(dataclasses.replace(cfg, dataset="movingfashion-synth"), synth_movingfashion)


def test_pairs_carry_their_livestream_only_when_grouped(synth_lpr4m) -> None:
    from datasets.torch_data import PairDataset

    data = PROFILES["tiny"].data
    products = {p.product_id: i for i, p in enumerate(synth_lpr4m.train)}
    keys = [livestream_of(p) for p in synth_lpr4m.train]
    grouped = PairDataset(synth_lpr4m.train, data, products, {}, train=False, live_groups=keys)
    order = sorted(set(keys))
    for i in (0, len(keys) - 1):
        assert grouped[i]["live"] == order.index(keys[i])
    assert "live" not in PairDataset(synth_lpr4m.train, data, products, {}, train=False)[0]
    with pytest.raises(ValueError, match="live_groups has 1 keys"):
        PairDataset(synth_lpr4m.train, data, products, {}, live_groups=keys[:1])


def test_grouping_is_part_of_the_recipe_label() -> None:
    train = dataclasses.replace(PROFILES["tiny"].train, group_batches="livestream")
    assert config_diff.recipe_changes("tiny", train) == {"train.group_batches": "livestream"}
    assert config_diff.recipe_changes("tiny", {"epochs": 4, "batch_size": 32}) == {}  # old records: no field
