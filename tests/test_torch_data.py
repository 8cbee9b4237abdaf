"""Torch datasets: the batch format of methods/base.py, padding, missing clips, broken files."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from benchmark.core.config import DataConfig
from datasets import faults as F
from datasets import transforms as T
from datasets.errors import DataError
from datasets.faults import Faults
from datasets.lpr4m import load_lpr4m
from datasets.movingfashion import load_movingfashion, read_movingfashion
from datasets.records import ClipSource
from datasets.torch_data import GalleryDataset, PairDataset, QueryDataset, collate_batch, load_clip
from tests.data_fixtures import make_lpr4m_release, make_movingfashion

CFG = DataConfig(num_frames=10, image_size=32, resize_size=36, num_workers=0)


@pytest.fixture(scope="module")
def lpr(tmp_path_factory):
    man = make_lpr4m_release(tmp_path_factory.mktemp("lpr") / "root")
    return man, load_lpr4m(man.root)


@pytest.fixture(scope="module")
def mf(tmp_path_factory):
    man = make_movingfashion(tmp_path_factory.mktemp("mf") / "root", missing_test=[2])
    # the missing test video kept as a miss (movingfashion-synth's rule; the real default drops it, as RICE)
    return man, read_movingfashion(man.root, Faults(strict=True), missing_test="miss")


def _indices(splits):
    products = {p: i for i, p in enumerate(sorted({t.product_id for t in splits.train}))}
    cats = {c: i for i, c in enumerate(splits.categories)}
    return products, cats


def test_pair_batch_format(lpr):
    man, s = lpr
    products, cats = _indices(s)
    ds = PairDataset(s.train, CFG, products, cats, train=True)
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_batch, shuffle=False)
    batch = next(iter(loader))
    assert set(batch) == {
        "frames",
        "frame_mask",
        "boxes",
        "box_mask",
        "asr",
        "image",
        "title",
        "product",
        "category",
        "index",
        "frame_index",
        "boxed_index",
        "boxed_clips",
        "clip_id",
        "image_id",
    }  # the ids: a text tower reading embedding files
    # the flat indices of real / boxed frames and of clips with a box, built by the collate
    real, boxed = batch["frame_mask"].flatten(), (batch["frame_mask"] & batch["box_mask"]).flatten()
    assert batch["frame_index"].tolist() == [i for i in range(30) if real[i]]
    assert batch["boxed_index"].tolist() == [i for i in range(30) if boxed[i]]
    assert batch["boxed_clips"].tolist() == [c for c in range(3) if boxed[c * 10 : (c + 1) * 10].any()]
    assert batch["frames"].shape == (3, 10, 3, 32, 32) and batch["frames"].dtype == torch.uint8
    assert batch["frame_mask"].dtype == torch.bool and batch["frame_mask"].shape == (3, 10)
    assert batch["boxes"].shape == (3, 10, 4) and batch["box_mask"].dtype == torch.bool
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == torch.uint8  # normalised on the device
    assert batch["product"].dtype == torch.long and batch["category"].dtype == torch.long
    assert batch["index"].tolist() == [0, 1, 2]
    assert batch["product"].tolist() == [products[p.product_id] for p in s.train[:3]]
    assert batch["category"].tolist() == [cats[p.category] for p in s.train[:3]]
    assert batch["asr"] == [p.clip.asr for p in s.train[:3]] and batch["title"] == [p.title for p in s.train[:3]]
    # clip 1 has 5 frames: at most 5 real frames (tail cut may keep fewer), the rest padded with zeros
    n1 = int(batch["frame_mask"][1].sum())
    assert 1 <= n1 <= 5 and batch["frame_mask"][1, :n1].all()
    assert batch["frames"][1, n1:].abs().sum() == 0 and not batch["box_mask"][1, n1:].any()
    assert ((batch["boxes"] >= 0) & (batch["boxes"] <= 1)).all()


def test_unknown_category_is_minus_one(lpr):
    _, s = lpr
    products, _ = _indices(s)
    item = PairDataset(s.train[:1], CFG, products, {}, train=False)[0]
    assert item["category"] == -1


def test_query_items_eval_is_deterministic_with_boxes(lpr):
    man, s = lpr
    ds = QueryDataset(s.queries, CFG)
    a, b = ds[1], ds[1]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["boxes"], b["boxes"])
    exp = man.queries[1]  # 5 frames: all taken, boxes on frames 0, 1, 3, 4
    assert a["frame_mask"].tolist() == [True] * 5 + [False] * 5
    assert a["box_mask"].tolist() == [bool(b) for b in exp["boxes"]] + [False] * 5
    assert a["asr"] == exp["asr"] and a["index"] == 1
    # linspace sampling over 12 frames picks frames 0,1,2,3,4,6,7,8,9,11 -> boxes skip k % 3 == 2
    c = ds[0]
    assert c["box_mask"].tolist() == [k % 3 != 2 for k in [0, 1, 2, 3, 4, 6, 7, 8, 9, 11]]


def test_gallery_items(lpr):
    _, s = lpr
    batch = collate_batch([GalleryDataset(s.gallery, CFG)[i] for i in range(2)])
    assert set(batch) == {"image", "title", "image_id", "index"}
    assert batch["image"].shape == (2, 3, 32, 32) and batch["title"] == [g.title for g in s.gallery[:2]]


def test_missing_query_clip_has_empty_mask(mf):
    _, s = mf
    q = s.queries[2]
    assert q.missing
    item = QueryDataset(s.queries, CFG)[2]
    assert not item["frame_mask"].any() and item["frames"].abs().sum() == 0 and not item["box_mask"].any()


def test_video_clip_sampled_at_one_fps(mf):
    _, s = mf
    item = QueryDataset(s.queries, CFG)[0]
    # 12 frames at 4 fps -> the frames ffmpeg -vf fps=1 writes: 1, 5, 9
    assert item["frame_mask"].tolist() == [True] * 3 + [False] * 7
    brightness = item["frames"][:3].float().mean(dim=(1, 2, 3))
    assert brightness[0] < brightness[1] < brightness[2]  # fixture frame i is brighter with i
    # tracklets hold even frame indices: 1, 5, 9 each have one within half a second
    assert item["box_mask"][:3].all()


def test_truncated_jpeg_raises_naming_file(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    s = load_lpr4m(man.root)
    frame = s.queries[0].clip.frame_paths[0]
    frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated JPEG") as ei:
        QueryDataset(s.queries, CFG)[0]
    assert ei.value.path == str(frame) and str(frame) in str(ei.value) and ei.value.kind == F.TRUNCATED_JPEG


def test_missing_frame_raises_naming_file(tmp_path):
    man = make_lpr4m_release(tmp_path / "r")
    s = load_lpr4m(man.root)
    frame = s.train[0].clip.frame_paths[0]
    frame.unlink()
    products, cats = _indices(s)
    with pytest.raises(DataError, match="file is missing") as ei:
        PairDataset(s.train, CFG, products, cats, train=False)[0]
    assert ei.value.path == str(frame) and ei.value.kind == F.MISSING_FILE


def test_zero_byte_mp4_raises_naming_file(tmp_path):
    man = make_movingfashion(tmp_path / "r", num_train=1, num_test=1)
    video = man.root / "videos" / "test000_0.mp4"
    video.write_bytes(b"")
    s = load_movingfashion(man.root)
    with pytest.raises(DataError, match="video file is empty") as ei:
        QueryDataset(s.queries, CFG)[0]
    assert ei.value.path == str(video)


def test_garbage_mp4_raises_naming_file(tmp_path):
    man = make_movingfashion(tmp_path / "r", num_train=1, num_test=1)
    video = man.root / "videos" / "test000_0.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x17" * 500)
    s = load_movingfashion(man.root)
    with pytest.raises(DataError, match="cannot open video") as ei:
        QueryDataset(s.queries, CFG)[0]
    assert ei.value.path == str(video)


def test_clip_shorter_than_t_with_no_files():
    item = load_clip(ClipSource(clip_id="x"), CFG)
    assert not item["frame_mask"].any() and item["frames"].shape == (10, 3, 32, 32)


def test_collate_rejects_unknown_types():
    with pytest.raises(TypeError, match="field 'x'"):
        collate_batch([{"x": object()}])


def test_dataloader_workers_give_the_same_eval_batches(lpr):
    _, s = lpr
    ds = QueryDataset(s.queries, CFG)
    n = len(s.queries)  # the reference batches count the split's queries, the loader its dataset's
    main = [collate_batch([ds[i] for i in range(j, min(j + 4, n))]) for j in range(0, n, 4)]
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_batch)
    assert len(main) >= 2  # batches for both workers
    for a, b in zip(main, loader, strict=True):
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["boxes"], b["boxes"])
        assert a["index"].tolist() == b["index"].tolist() and a["asr"] == b["asr"]


def test_method_data_recipe_knobs(lpr):
    """SGMN's paper data recipe: evaluation's frame pick, no spatial jitter, bicubic resize."""
    _, s = lpr
    sgmn_pick = dataclasses.replace(CFG, eval_frame_pick="rice-mf")
    c = QueryDataset(s.queries, sgmn_pick)[0]  # 12 frames, boxes skip k % 3 == 2
    assert c["box_mask"].tolist() == [k % 3 != 2 for k in [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]]  # endpoint=False
    products, cats = _indices(s)
    still = dataclasses.replace(CFG, train_spatial=False)
    trained = PairDataset(s.train[:1], still, products, cats, train=True)[0]["image"]
    assert torch.equal(trained, PairDataset(s.train[:1], CFG, products, cats, train=False)[0]["image"])
    frame = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b = (T.eval_geometry([frame], 36, 32, "square", mode) for mode in ("bilinear", "bicubic"))
    assert a.shape == b.shape == (1, 3, 32, 32) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="interpolation 'nearest' is not one of bilinear, bicubic"):
        T.eval_geometry([frame], 36, 32, "square", "nearest")
