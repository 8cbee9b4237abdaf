"""Decoded-frame cache (datasets/frame_cache.py): same inputs as decoding, keys, integrity."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmark.core.config import PROFILES
from benchmark.training.item_seeding import ItemSeededDataset
from datasets import frame_cache as FC
from datasets import transforms as T
from datasets.errors import DataError
from datasets.records import ClipSource, GalleryItem, Query, TrainPair
from datasets.torch_data import GalleryDataset, PairDataset, QueryDataset, collate_batch

TINY = PROFILES["tiny"].data  # resize 128 (shorter side), crop 112
SQUARE = dataclasses.replace(TINY, resize_mode="square")


def _jpeg(path: Path, w: int, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    base = (rng.random((max(2, h // 8), max(2, w // 8), 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC)).astype(np.int16)
    img = (img + rng.integers(-12, 13, size=img.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, "JPEG", quality=90)
    return path


def _clip(root: Path, name: str, w: int, h: int, n: int, seed: int) -> ClipSource:
    frames = tuple(_jpeg(root / f"{name}-{k}.jpg", w, h, seed * 100 + k) for k in range(n))
    boxes = {k: (0.2 * w, 0.3 * h, 0.7 * w, 0.8 * h) for k in range(0, n, 2)}
    return ClipSource(clip_id=name, frame_paths=frames, boxes=boxes, asr="hi")


# frame sizes: lpr4m-synth's (128 x 128 = the tiny resize: stored as decoded), a portrait frame
# larger than the resize (stored resized), one PIL decodes at half scale (draft) before that,
# one smaller (stored as decoded, upsampled at use)
SIZES = {"synth": (128, 128), "portrait": (200, 356), "draft": (270, 480), "small": (96, 120)}


@pytest.fixture()
def data(tmp_path):
    clips = {name: _clip(tmp_path, name, w, h, 6, i) for i, (name, (w, h)) in enumerate(SIZES.items())}
    images = {
        name: _jpeg(tmp_path / f"{name}-shop.jpg", w, h, 50 + i) for i, (name, (w, h)) in enumerate(SIZES.items())
    }
    queries = [Query(query_id=n, clip=c, gt_ids=("g",)) for n, c in clips.items()]
    gallery = [GalleryItem(image_id=n, image_path=p) for n, p in images.items()]
    pairs = [TrainPair(clip=clips[n], image_id=n, image_path=images[n], product_id=n) for n in SIZES]
    return {"queries": queries, "gallery": gallery, "pairs": pairs, "root": tmp_path / "frames-cache"}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("cfg", [TINY, SQUARE], ids=["shorter", "square"])
def test_evaluation_inputs_are_byte_identical(data, cfg):
    for ds in (QueryDataset(data["queries"], cfg), GalleryDataset(data["gallery"], cfg)):
        plain = [ds[i] for i in range(len(ds))]
        FC.attach(ds, "eval", root=data["root"])
        assert ds.frame_cache is not None and len(ds.frame_cache) > 0
        for i in range(len(ds)):
            _same(plain[i], ds[i])


def test_cache_stores_resized_pixels(data):
    ds = FC.attach(GalleryDataset(data["gallery"], TINY), "g", root=data["root"])
    sizes = {
        Path(p).name.split("-")[0]: tuple(int(v) for v in ds.frame_cache.index[r, 1:3])
        for p, r in ds.frame_cache.rows.items()
    }
    # (h, w): the shorter side resized to 128 when larger; smaller images are kept as decoded
    assert sizes == {"synth": (128, 128), "portrait": (227, 128), "draft": (227, 128), "small": (120, 96)}
    decoded = {
        Path(p).name.split("-")[0]: tuple(int(v) for v in ds.frame_cache.index[r, 5:7])
        for p, r in ds.frame_cache.rows.items()
    }
    assert decoded["draft"] == (135, 240) and decoded["portrait"] == (200, 356)


def test_training_inputs_identical_where_no_resize_and_same_random_numbers_everywhere(data):
    plain = ItemSeededDataset(PairDataset(data["pairs"], TINY, {n: i for i, n in enumerate(SIZES)}, {}), seed=3)
    cached = ItemSeededDataset(PairDataset(data["pairs"], TINY, {n: i for i, n in enumerate(SIZES)}, {}), seed=3)
    FC.attach(cached.base, "train", root=data["root"])
    for epoch in range(3):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i, name in enumerate(SIZES):
            torch.manual_seed(epoch)
            a = plain[i]
            after_plain = torch.get_rng_state()
            torch.manual_seed(epoch)
            b = cached[i]
            assert torch.equal(after_plain, torch.get_rng_state())
            # the item's own draws: the same tail cut and the same crop window, so the same boxes
            assert torch.equal(a["frame_mask"], b["frame_mask"]) and torch.equal(a["box_mask"], b["box_mask"])
            if name in ("portrait", "draft"):  # stored resized: the crop is cut from resized pixels
                assert torch.allclose(a["boxes"], b["boxes"], atol=1e-6)
                fa, fb = (T.to_float(x["frames"], TINY.mean, TINY.std) for x in (a, b))  # the model's input
                assert (fa - fb).abs().mean() < 0.25  # one resampling more (grainy test images)
            else:
                _same(a, b)
    assert cached.base.frame_cache.misses == 0  # every frame the tail cut can pick is cached
    assert len(cached.base.frame_cache) == len(SIZES) * (TINY.num_frames + 1)  # and only those


def test_training_draws_unchanged_by_cache_without_item_seeding(data):
    """Global-generator consumption is the same item by item (the RNG stream stays aligned)."""
    plain = PairDataset(data["pairs"], TINY, {n: i for i, n in enumerate(SIZES)}, {})
    cached = FC.attach(
        PairDataset(data["pairs"], TINY, {n: i for i, n in enumerate(SIZES)}, {}), "t", root=data["root"]
    )
    torch.manual_seed(0)
    a = [plain[i]["boxes"] for i in range(3)]
    state_a = torch.get_rng_state()
    torch.manual_seed(0)
    b = [cached[i]["boxes"] for i in range(3)]
    assert torch.equal(state_a, torch.get_rng_state())
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def test_workers_read_the_cache(data):
    """A DataLoader worker reads the cached pixels, not the files: once cached, every source
    frame is overwritten with another picture of its size, which a worker decoding the files
    would return instead."""
    ds = FC.attach(QueryDataset(data["queries"], TINY), "q", root=data["root"], num_workers=1)
    n = len(data["queries"])
    plain = collate_batch([QueryDataset(data["queries"], TINY)[i] for i in range(n)])
    for q in data["queries"]:
        w, h = SIZES[q.query_id]
        for k, path in enumerate(q.clip.frame_paths):
            _jpeg(path, w, h, seed=9000 + k)
    repainted = collate_batch([QueryDataset(data["queries"], TINY)[i] for i in range(n)])
    assert not torch.equal(repainted["frames"], plain["frames"])  # the files now decode differently
    (batch,) = list(DataLoader(ds, batch_size=n, num_workers=1, collate_fn=collate_batch))
    _same(plain, batch)


def _spec_paths(data):
    return [p for q in data["queries"] for p in q.clip.frame_paths]


def test_key_changes_with_tag_transform_and_file_content(data):
    paths = _spec_paths(data)
    k = FC.cache_key("lpr4m-synth/abc/query", paths, FC.CacheSpec(128, "shorter"))
    assert k == FC.cache_key("lpr4m-synth/abc/query", list(paths), FC.CacheSpec(128, "shorter"))
    assert k != FC.cache_key("lpr4m-synth/abd/query", paths, FC.CacheSpec(128, "shorter"))
    assert k != FC.cache_key("lpr4m-synth/abc/query", paths, FC.CacheSpec(256, "shorter"))
    assert k != FC.cache_key("lpr4m-synth/abc/query", paths, FC.CacheSpec(128, "square"))
    assert k != FC.cache_key("lpr4m-synth/abc/query", paths[:-1], FC.CacheSpec(128, "shorter"))
    st = os.stat(paths[0])
    _jpeg(paths[0], 128, 128, 999)  # new content under the same name
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert k != FC.cache_key("lpr4m-synth/abc/query", paths, FC.CacheSpec(128, "shorter"))


def test_a_changed_file_never_hits_the_old_entry(data):
    ds = FC.attach(GalleryDataset(data["gallery"], TINY), "g", root=data["root"])
    first = ds.frame_cache.folder
    path = data["gallery"][0].image_path
    _jpeg(path, 128, 128, 12345)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    plain = GalleryDataset(data["gallery"], TINY)[0]
    ds = FC.attach(ds, "g", root=data["root"])
    assert ds.frame_cache.folder != first
    _same(plain, ds[0])


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-meta", "bad-meta"])
def test_a_damaged_cache_is_detected_and_rebuilt(data, damage):
    ds = FC.attach(QueryDataset(data["queries"], TINY), "q", root=data["root"])
    folder = ds.frame_cache.folder
    want = [ds[i] for i in range(len(ds))]
    pixels = folder / "pixels.u8"
    if damage == "truncate":
        with open(pixels, "r+b") as f:
            f.truncate(pixels.stat().st_size // 2)
    elif damage == "flip":
        raw = bytearray(pixels.read_bytes())
        raw[len(raw) // 3] ^= 0xFF
        pixels.write_bytes(bytes(raw))
    elif damage == "no-meta":
        (folder / "meta.json").unlink()
    else:
        (folder / "meta.json").write_text("{not json")
    assert FC.FrameCache.open(folder) is None
    logs: list[str] = []
    ds2 = FC.attach(QueryDataset(data["queries"], TINY), "q", root=data["root"], log=logs.append)
    assert ds2.frame_cache.folder == folder and FC.FrameCache.open(folder) is not None
    assert any("rebuilding" in line for line in logs)
    for i in range(len(ds2)):
        _same(want[i], ds2[i])
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_an_unreadable_image_still_raises_the_decoders_error(data):
    bad = data["gallery"][1].image_path
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    ds = FC.attach(GalleryDataset(data["gallery"], TINY), "g", root=data["root"])
    assert ds.frame_cache is not None
    _same(GalleryDataset(data["gallery"], TINY)[0], ds[0])
    with pytest.raises(DataError, match=str(bad)):
        ds[1]


def test_off_where_it_does_not_fit(data):
    logs: list[str] = []
    paths = _spec_paths(data)
    assert FC.prepare("q", paths, FC.CacheSpec(128), root=data["root"], max_bytes=1000, log=logs.append) is None
    assert logs and "off" in logs[0]
    est = FC.estimate_bytes(paths, FC.CacheSpec(128))
    built = FC.prepare("q", paths, FC.CacheSpec(128), root=data["root"])
    assert abs(built.nbytes - est) <= 0.5 * built.nbytes  # a header-based estimate, sampled
