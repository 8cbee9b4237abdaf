"""Feeding a GPU: the paper profile's loader throughput per CPU core on the real release's frame size.

Run as a script::

    .venv/bin/python tests/benchmarks/bench_gpu_feed.py [--pairs 24] [--rounds 3]

or with pytest-benchmark (fewer pairs)::

    .venv/bin/python -m pytest tests/benchmarks/bench_gpu_feed.py --benchmark-only --benchmark-enable -s -p no:xdist

Frames as the LPR4M release stores them (img2dataset, ``--image_size 256 --resize_mode
keep_ratio``: shortest side 256; portrait 9:16 livestream frames, so 256 x 455), textured,
JPEG quality 95 (img2dataset's default); shop images 256 x 256. One training pair of the paper
profile = 10 frames + 1 shop image through :class:`datasets.torch_data.PairDataset` (decode,
tail cut, random resized crop to 224, flip; uint8 out: CLIP normalisation now runs on the device), single-threaded as in one
DataLoader worker; the official tail cut keeps 7.75 of the 10 frames on average, so a training
pair decodes 8.75 images, the ``decode only`` rows 11. Rows:

* ``pair: pil`` / ``pair: torchvision``: the whole item with ``LPR_BENCH_JPEG_BACKEND=pil-draft``
  (PIL's reduced-scale draft cannot apply: the frames are already at the 256 px the profile
  resizes to) and ``torchvision``;
* ``pair: decord video``: MovingFashion's path, 10 frames at 1 fps from a 256 x 455 mp4
  (mpeg4, the synthetic set's codec; the real videos are H.264) + the shop image;
* ``decode only``: PIL, PIL draft at half scale (what a 128 px profile would decode),
  torchvision per file, torchvision batched per clip: 11 images, nothing else.

Rates are per CPU-second of this process (``time.process_time``), so that a shared machine
slows the wall clock but not the figure much; rounds interleave the rows. The summary turns the
per-core rate into the cores needed to keep ViT-B/32 training fed (see ``GPU_PAIRS_PER_S``).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from PIL import Image

FRAME_W, FRAME_H, SHOP = 256, 455, 256
FRAMES_PER_PAIR = 10
# timm's published training throughput of vit_base_patch32_224 (AMP, batch 512, RTX 3090,
# results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv): 1,703.6 images/s. A V100 (125 fp16
# tensor TFLOPS, 900 GB/s) is taken as equal to that 3090 (71 / 936), an H200 as 4x (assumption:
# its dense bf16 peak is ~14x the 3090's, a ViT-B/32 at batch 256 uses far less of it). A RICE
# pair is 11 images through the encoder (the decoder and text tower add little), so:
IMAGES_PER_S = {"V100": 1703.6, "H200": 4 * 1703.6}
GPU_PAIRS_PER_S = {name: rate / (FRAMES_PER_PAIR + 1) for name, rate in IMAGES_PER_S.items()}


def _texture(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    base = (rng.random((h // 16, w // 16, 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC)).astype(np.int16)
    return (img + rng.integers(-10, 11, size=img.shape)).clip(0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue())
    return path


def make_data(root: Path, pairs: int):
    from benchmark.core.config import PROFILES
    from datasets.records import ClipSource, TrainPair
    from datasets.synthetic.write_movingfashion import encode_mp4
    from datasets.torch_data import PairDataset

    rng = np.random.default_rng(0)
    jpeg_pairs, video_pairs = [], []
    video = root / "clip.mp4"
    encode_mp4(video, [_texture(FRAME_W, FRAME_H, rng) for _ in range(10 * 30)][: 10 * 30], fps=30, qscale=3)
    for i in range(pairs):
        frames = tuple(_save(root / f"{i}-{k}.jpg", _texture(FRAME_W, FRAME_H, rng)) for k in range(FRAMES_PER_PAIR))
        shop = _save(root / f"{i}-shop.jpg", _texture(SHOP, SHOP, rng))
        boxes = {k: (40.0, 100.0, 200.0, 380.0) for k in range(FRAMES_PER_PAIR)}
        jpeg_pairs.append(
            TrainPair(
                clip=ClipSource(clip_id=str(i), frame_paths=frames, boxes=boxes),
                image_id=str(i),
                image_path=shop,
                product_id=str(i),
            )
        )
        video_pairs.append(
            TrainPair(
                clip=ClipSource(clip_id=f"v{i}", video_path=video, sample_fps=1.0),
                image_id=str(i),
                image_path=shop,
                product_id=str(i),
            )
        )
    cfg = PROFILES["paper"].data
    products = {str(i): i for i in range(pairs)}
    return PairDataset(jpeg_pairs, cfg, products, {}), PairDataset(video_pairs, cfg, products, {})


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _rows(jpeg, video) -> dict[str, Callable[[], int]]:
    """name -> a function that does its work once and returns the pairs it handled."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    from datasets import decoding

    paths = [(p.clip.frame_paths, p.image_path) for p in jpeg.pairs]

    def items(ds, **env) -> Callable[[], int]:
        def run() -> int:
            with _env(**env):
                for i in range(len(ds)):
                    ds[i]
            return len(ds)

        return run

    def decode(kind: str) -> Callable[[], int]:
        def run() -> int:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                for frames, shop in paths:
                    files = [*frames, shop]
                    if kind == "torchvision batched":
                        decode_jpeg(
                            [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files],
                            mode=ImageReadMode.RGB,
                        )
                        continue
                    for f in files:
                        if kind == "torchvision":
                            decode_jpeg(
                                torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB
                            )
                        else:
                            with Image.open(f) as img:
                                if kind == "pil draft 1/2":
                                    img.draft("RGB", (img.size[0] // 2, img.size[1] // 2))
                                np.asarray(img.convert("RGB"))
            return len(paths)

        return run

    _ = decoding  # the backends are chosen through the environment variables below
    return {
        "pair: pil": items(jpeg, LPR_BENCH_JPEG_BACKEND="pil-draft"),
        "pair: torchvision": items(jpeg, LPR_BENCH_JPEG_BACKEND="torchvision"),
        "pair: decord video": items(video),
        "decode only: pil": decode("pil"),
        "decode only: pil draft 1/2": decode("pil draft 1/2"),
        "decode only: torchvision": decode("torchvision"),
        "decode only: torchvision batched": decode("torchvision batched"),
    }


def measure(pairs: int = 24, rounds: int = 3) -> dict[str, float]:
    """{row: pairs per CPU-second (median over rounds)}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            jpeg, video = make_data(Path(tmp), pairs)
            rows = _rows(jpeg, video)
            for run in rows.values():
                run()  # warm-up (page cache, first calls)
            rates: dict[str, list[float]] = {k: [] for k in rows}
            for _ in range(rounds):
                for name, run in rows.items():
                    t0 = time.process_time()
                    n = run()
                    rates[name].append(n / max(time.process_time() - t0, 1e-9))
    finally:
        torch.set_num_threads(threads)
    return {k: statistics.median(v) for k, v in rates.items()}


def summary(res: dict[str, float]) -> str:
    lines = [
        f"pairs per CPU-second ({FRAMES_PER_PAIR} frames {FRAME_W}x{FRAME_H} + one {SHOP}x{SHOP} shop image, paper profile)"
    ]
    for name, rate in res.items():  # a training pair decodes 8.75 images on average (the tail cut), decode rows 11
        images = f"  {rate * (FRAMES_PER_PAIR + 1):7.0f} images/s" if name.startswith("decode") else ""
        lines.append(f"  {name:34s} {rate:7.1f} pairs/s{images}")
    lines.append("cores to keep ViT-B/32 training fed (assumed GPU rates: see GPU_PAIRS_PER_S):")
    for gpu, n_gpu in (("V100", 8), ("H200", 1)):
        need = GPU_PAIRS_PER_S[gpu] * n_gpu
        cores = ", ".join(
            f"{name.removeprefix('pair: ')} {need / res[name]:.0f}" for name in res if name.startswith("pair:")
        )
        lines.append(f"  {n_gpu} x {gpu} ({need:.0f} pairs/s, {need * (FRAMES_PER_PAIR + 1):.0f} images/s): {cores}")
    return "\n".join(lines)


def test_bench_gpu_feed(benchmark) -> None:
    res = benchmark.pedantic(measure, kwargs=dict(pairs=4, rounds=1), rounds=1, iterations=1)
    print("\n" + summary(res))
    assert all(v > 0 for v in res.values())


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print(summary(measure(args.pairs, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
