"""Batched JPEG decoding on a device (``LPR_BENCH_JPEG_DEVICE``, datasets/decoding.py).

The CPU path of the same code runs everywhere; the CUDA tests run where a CUDA device is
present and are skipped with the reason elsewhere (tests never need a GPU)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.core.config import PROFILES
from datasets import decoding
from datasets import transforms as T
from datasets.errors import DataError
from datasets.records import ClipSource, Query
from datasets.torch_data import QueryDataset

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _jpeg(path: Path, w: int, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    base = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC)).astype(np.int16)
    img = (img + rng.integers(-10, 11, size=img.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture()
def frames(tmp_path):  # the LPR4M release's stored size (shortest side 256, portrait) and a square one
    return [_jpeg(tmp_path / f"f{k}.jpg", 256, 455, k) for k in range(4)] + [_jpeg(tmp_path / "sq.jpg", 128, 128, 9)]


def test_cpu_batch_equals_the_per_file_torchvision_decoder(frames):
    datas = [p.read_bytes() for p in frames]
    batch = decoding.decode_jpeg_batch(datas, frames, "cpu")
    for img, p in zip(batch, frames, strict=True):
        ref, size = decoding.decode_image(p, backend="torchvision")
        assert img.dtype == torch.uint8 and torch.equal(img, ref) and size == (img.shape[2], img.shape[1])


def test_option_routes_decode_frames_through_the_batch(frames, monkeypatch):
    calls = []
    real = decoding.decode_jpeg_batch
    monkeypatch.setattr(
        decoding, "decode_jpeg_batch", lambda d, p, dev: calls.append((len(d), str(dev))) or real(d, p, dev)
    )
    monkeypatch.setenv("LPR_BENCH_JPEG_DEVICE", "cpu")
    imgs, sizes = decoding.decode_frames(frames, min_side=256)
    assert calls == [(len(frames), "cpu")]  # one call for the whole clip
    assert sizes[:4] == [(256, 455)] * 4 and sizes[4] == (128, 128)
    monkeypatch.delenv("LPR_BENCH_JPEG_DEVICE")
    ref, ref_sizes = decoding.decode_frames(frames, min_side=256)  # auto: torchvision for these sizes
    assert ref_sizes == sizes and all(torch.equal(a, b) for a, b in zip(imgs, ref, strict=True))


def test_same_clip_items_with_the_option_on_the_cpu(frames, monkeypatch):
    clip = ClipSource(clip_id="c", frame_paths=tuple(frames[:4]), boxes={0: (20.0, 40.0, 200.0, 300.0)})
    ds = QueryDataset([Query(query_id="c", clip=clip, gt_ids=("g",))], PROFILES["paper"].data)
    ref = ds[0]
    monkeypatch.setenv("LPR_BENCH_JPEG_DEVICE", "cpu")
    item = ds[0]
    for k in ("frames", "frame_mask", "boxes", "box_mask"):
        assert torch.equal(item[k], ref[k]), k


def test_a_bad_file_in_the_batch_is_named(frames, tmp_path):
    bad = tmp_path / "bad.jpg"
    data = frames[1].read_bytes()
    bad.write_bytes(data[:600] + bytes(400) + data[-2:])  # JPEG header, garbage, an end marker
    paths = [frames[0], bad, frames[2]]
    with pytest.raises(DataError, match=str(bad)):
        decoding.decode_jpeg_batch([p.read_bytes() for p in paths], paths, "cpu")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{cut}: truncated JPEG"):
        decoding.decode_jpeg_batch([frames[0].read_bytes(), cut.read_bytes()], [frames[0], cut], "cpu")


def test_bad_option_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("LPR_BENCH_JPEG_DEVICE", "tpu7")
    with pytest.raises(ValueError, match="LPR_BENCH_JPEG_DEVICE='tpu7'"):
        decoding.jpeg_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is absent")
def test_cuda_requested_without_cuda(monkeypatch):
    monkeypatch.setenv("LPR_BENCH_JPEG_DEVICE", "cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        decoding.jpeg_device()


@NEEDS_CUDA
def test_cuda_batch_close_to_the_cpu_decoder(frames):
    datas = [p.read_bytes() for p in frames]
    gpu = decoding.decode_jpeg_batch(datas, frames, "cuda")
    for img, p in zip(gpu, frames, strict=True):
        ref, _ = decoding.decode_image(p, backend="torchvision")
        assert img.device.type == "cuda" and img.shape == ref.shape
        assert (img.cpu().float() - ref.float()).abs().mean() < 2.0  # nvJPEG's IDCT differs slightly


@NEEDS_CUDA
def test_cuda_clip_items_close_to_the_cpu_ones(frames, monkeypatch):
    clip = ClipSource(clip_id="c", frame_paths=tuple(frames[:4]), boxes={0: (20.0, 40.0, 200.0, 300.0)})
    ds = QueryDataset([Query(query_id="c", clip=clip, gt_ids=("g",))], PROFILES["paper"].data)
    ref = ds[0]
    monkeypatch.setenv("LPR_BENCH_JPEG_DEVICE", "cuda")
    item = ds[0]
    assert item["frames"].device.type == "cpu" and torch.equal(item["boxes"], ref["boxes"])
    data = PROFILES["paper"].data
    got, want = (T.to_float(x["frames"], data.mean, data.std) for x in (item, ref))  # the model's input
    assert (got - want).abs().mean() < 0.05
