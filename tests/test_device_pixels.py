"""uint8 batches from the loader, normalised on the device; persistent training workers.

* The model's input after ``engine.to_device`` equals, bit for bit, the float batch the workers
  used to build (per item: ``(x / 255 - mean) / std`` in float32 into the real frames, +0.0 in the
  padding ones), on lpr4m-synth and movingfashion-synth (training pairs, queries with a missing
  clip, gallery images).
* Persistent workers (one DataLoader for the run, the epoch carried by the sampler) load every
  item of epochs 0-2, a mid-epoch resume included, exactly as a fresh loader per epoch does, and a
  short training run through the engine ends with the same loss history and weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from benchmark.core.config import DataConfig, TrainConfig
from benchmark.training import engine
from benchmark.training.distributed import DistEnv
from benchmark.training.epoch_loader import EpochLoaders
from benchmark.training.item_seeding import ItemSeededDataset
from datasets.torch_data import GalleryDataset, PairDataset, QueryDataset, collate_batch
from methods.base import DataInfo, Encoded, Method

CFG = DataConfig(num_frames=10, image_size=32, resize_size=36, num_workers=0)


def _worker_float(frames: Tensor, mask: Tensor, cfg: DataConfig) -> Tensor:
    """The float frames the workers used to return (the pre-change load_clip, spelled out):
    the real frames converted, multiplied by 1/(255 std) and shifted by mean/std in float32 in
    place, the padding frames zeroed."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in cfg.std], dtype=torch.float32).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(cfg.mean, cfg.std)], dtype=torch.float32).view(3, 1, 1)
    out = torch.empty(frames.shape, dtype=torch.float32)
    for b in range(frames.shape[0]):
        k = int(mask[b].sum())
        assert mask[b, :k].all() and not mask[b, k:].any()  # real frames first, padding after
        out[b, :k].copy_(frames[b, :k]).mul_(scale).sub_(shift)
        out[b, k:].zero_()
    return out


def _worker_image(image: Tensor, cfg: DataConfig) -> Tensor:
    scale = torch.tensor([1.0 / (255.0 * s) for s in cfg.std], dtype=torch.float32).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(cfg.mean, cfg.std)], dtype=torch.float32).view(3, 1, 1)
    return torch.empty(image.shape, dtype=torch.float32).copy_(image).mul_(scale).sub_(shift)


def _bits(x: Tensor) -> Tensor:
    return x.contiguous().view(torch.int32)  # -0.0 and +0.0 differ here


@pytest.mark.parametrize("name", ["synth_lpr4m", "synth_movingfashion"])
def test_device_normalised_batch_is_the_old_worker_float_batch_bitwise(name, request):
    splits = request.getfixturevalue(name)
    products = {p: i for i, p in enumerate(sorted({t.product_id for t in splits.train}))}
    pairs = ItemSeededDataset(PairDataset(splits.train, CFG, products, {}, train=True), seed=5)
    pairs.set_epoch(1)
    sources = {
        "pairs": [pairs[i] for i in range(min(12, len(pairs)))],
        "queries": [QueryDataset(splits.queries, CFG)[i] for i in range(len(splits.queries))],
        "gallery": [GalleryDataset(splits.gallery, CFG)[i] for i in range(min(12, len(splits.gallery)))],
    }
    padded = 0
    for side, items in sources.items():
        host = collate_batch(items)
        model = engine.to_device(host, torch.device("cpu"), CFG)
        if "frames" in host:
            assert host["frames"].dtype == torch.uint8 and model["frames"].dtype == torch.float32
            want = _worker_float(host["frames"], host["frame_mask"], CFG)
            assert torch.equal(_bits(model["frames"]), _bits(want)), side
            padded += int((~host["frame_mask"]).sum())
            assert torch.equal(host["frame_mask"], model["frame_mask"]) and torch.equal(host["boxes"], model["boxes"])
        if "image" in host:
            assert host["image"].dtype == torch.uint8
            assert torch.equal(_bits(model["image"]), _bits(_worker_image(host["image"], CFG))), side
    assert padded > 0  # the padding frames were compared (+0.0 bits)
    if name == "synth_movingfashion":
        assert any(q.missing for q in splits.queries)  # an all-padding clip among them


def test_uint8_batch_without_the_data_config_is_refused_in_one_line():
    batch = {"image": torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "index": torch.arange(2)}
    with pytest.raises(ValueError, match=r"uint8 frames/image needs the data config's mean/std"):
        engine.to_device(batch, torch.device("cpu"))
    float_batch = {"x": torch.ones(2), "index": torch.arange(2)}  # no pixels: passed through
    assert engine.to_device(float_batch, torch.device("cpu"))["x"] is float_batch["x"]


# --- persistent workers ----------------------------------------------------------------------


def _pairs(splits) -> ItemSeededDataset:
    products = {p: i for i, p in enumerate(sorted({t.product_id for t in splits.train}))}
    return ItemSeededDataset(PairDataset(splits.train, CFG, products, {}, train=True), seed=3)


def _epochs(dataset: ItemSeededDataset, persistent: bool, plan: list[tuple[int, int]]) -> list[list[dict]]:
    """Each (epoch, skip_micro) of ``plan`` loaded the way the engine loads it."""
    loaders = EpochLoaders(
        dataset, micro_bs=4, num_workers=2, collate=collate_batch, pin_memory=False, persistent=persistent
    )
    out = []
    for epoch, skip in plan:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=3, drop_last=True)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)  # what the engine does; persistent workers never see it
        out.append(list(loaders.epoch(epoch, sampler=sampler, stream=None, skip_micro=skip, generator_seed=epoch)))
    assert (loaders.loader is not None) == persistent  # the persistent path was the one taken
    loaders.close()
    return out


def test_persistent_workers_load_every_epoch_item_for_item_as_fresh_loaders(synth_lpr4m):
    dataset = _pairs(synth_lpr4m)
    plan = [(0, 0), (1, 0), (2, 1)]  # epoch 2 resumed after its first micro-batch
    fresh, kept = _epochs(dataset, False, plan), _epochs(dataset, True, plan)
    for (epoch, _), a_batches, b_batches in zip(plan, fresh, kept):
        assert len(a_batches) == len(b_batches) > 0
        for a, b in zip(a_batches, b_batches):
            assert a["index"].tolist() == b["index"].tolist(), epoch
            for key in ("frames", "frame_mask", "boxes", "box_mask", "image"):
                assert torch.equal(a[key], b[key]), (epoch, key)
    # the augmentation does change with the epoch (else the test above would prove nothing)
    first = {int(i): f for b in fresh[0] for i, f in zip(b["index"], b["frames"])}
    second = {int(i): f for b in fresh[1] for i, f in zip(b["index"], b["frames"])}
    assert any(not torch.equal(first[i], second[i]) for i in first.keys() & second.keys())


@dataclasses.dataclass(frozen=True)
class _ProbeConfig:
    dim: int = 4


class _PixelProbe(Method):
    """A linear probe on pooled pixels: its loss depends on every normalised value it is fed."""

    Config = _ProbeConfig
    PROFILES = {"tiny": _ProbeConfig(), "paper": _ProbeConfig()}

    def __init__(self, cfg: _ProbeConfig = _ProbeConfig(), info: Optional[DataInfo] = None) -> None:
        super().__init__(cfg, info or DataInfo(num_products=1, num_categories=0, num_frames=10, image_size=32))
        self.proj = nn.Linear(3 * 16, cfg.dim)

    def _embed(self, x: Tensor) -> Tensor:
        assert x.dtype == torch.float32  # the method sees the float contract, never uint8
        return self.proj(F.adaptive_avg_pool2d(x, 4).flatten(1))

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self._embed(batch["frames"].flatten(0, 1)).view(*batch["frames"].shape[:2], -1).mean(1))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self._embed(batch["image"]))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        q, g = self.encode_query(batch).embedding, self.encode_gallery(batch).embedding
        return {"l2": (q - g).pow(2).mean()}


def test_engine_with_persistent_workers_trains_as_with_fresh_loaders(tmp_path, synth_lpr4m):
    products = {p: i for i, p in enumerate(sorted({t.product_id for t in synth_lpr4m.train}))}
    cfg = TrainConfig(epochs=3, batch_size=8, lr_encoder=0.01, lr_new=0.01, warmup_ratio=0.0, amp=False)
    runs = []
    for persistent in (False, True):
        torch.manual_seed(7)
        m = _PixelProbe()
        res = engine.train(
            m,
            PairDataset(synth_lpr4m.train, CFG, products, {}, train=True),
            cfg,
            env=DistEnv(),
            run_dir=tmp_path / str(persistent),
            seed=2,
            num_workers=2,
            show_progress=False,
            persistent_workers=persistent,
        )
        runs.append((res.history, {k: v.clone() for k, v in m.state_dict().items()}))
    (h_fresh, w_fresh), (h_kept, w_kept) = runs
    assert len(h_fresh) == 3 and [r["epoch"] for r in h_fresh] == [r["epoch"] for r in h_kept]
    assert [r["loss"] for r in h_fresh] == [r["loss"] for r in h_kept]
    assert all(torch.equal(w_fresh[k], w_kept[k]) for k in w_fresh)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_normalised_on_the_gpu_through_the_prefetcher_equals_the_cpu_bitwise():
    from benchmark.training.prefetch import DevicePrefetcher

    g = torch.Generator().manual_seed(0)
    mask = torch.arange(10)[None] < torch.tensor([[10], [3], [0]])  # full, padded, missing clip
    host = {
        "frames": torch.randint(0, 256, (3, 10, 3, 8, 8), dtype=torch.uint8, generator=g) * mask[..., None, None, None],
        "frame_mask": mask,
        "image": torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=g),
        "index": torch.arange(3),
    }
    want = engine.to_device(host, torch.device("cpu"), CFG)
    feed = lambda b, d: engine.to_device(b, d, CFG)  # noqa: E731
    (got,) = list(DevicePrefetcher([{k: v.pin_memory() for k, v in host.items()}], torch.device("cuda"), feed))
    for key in ("frames", "image"):
        assert got[key].device.type == "cuda" and torch.equal(_bits(got[key].cpu()), _bits(want[key])), key
