"""Decoding frames and images to uint8 tensors: a JPEG fast path and decord for videos.

JPEG backends (measured in ``tests/benchmarks/bench_loading.py``):

* ``pil-draft``: Pillow with ``Image.draft``, which lets libjpeg-turbo decode straight to a reduced
  scale (1/2, 1/4, 1/8) when the frame is at least twice the size the transform needs, so a 720p
  frame headed for a 256 px resize is decoded at half size and the resize works on 1/4 the pixels.
* ``torchvision``: ``torchvision.io.decode_jpeg`` at full size; less per-call overhead, so it is
  the faster one on small frames where no reduced-scale decode applies.
* ``auto`` (default): reads the JPEG's size from its header and uses ``pil-draft`` when a
  reduced-scale decode applies (shorter side >= 2 x the needed side), ``torchvision`` otherwise,
  i.e. the faster backend for each frame per the benchmark.

The backend can be forced with the environment variable ``LPR_BENCH_JPEG_BACKEND``.

Decoding stays in the DataLoader's workers: a ``LPR_BENCH_JPEG_DEVICE`` option (batched nvJPEG
in the main process) was removed, as it serialised the loop (docs/performance.md).

Every decoder returns ``(uint8 tensor [3, h, w], (W, H))`` where ``(W, H)`` is the stored size, so boxes
given in stored-frame pixels stay correct after a reduced-scale decode. Missing, unreadable or
truncated files raise :class:`~datasets.errors.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile
from torchvision.io import ImageReadMode, decode_jpeg

from datasets import faults as F
from datasets.errors import DataError
from datasets.shard_store import read_path

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, never silently grey

JPEG_BACKENDS = ("auto", "pil-draft", "torchvision")
DEFAULT_JPEG_BACKEND = "auto"
_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def jpeg_backend() -> str:
    name = os.environ.get("LPR_BENCH_JPEG_BACKEND", DEFAULT_JPEG_BACKEND)
    if name not in JPEG_BACKENDS:
        raise ValueError(f"LPR_BENCH_JPEG_BACKEND={name!r}: expected one of {JPEG_BACKENDS}")
    return name


_PRELOADED: dict[Path, bytes] = {}  # bytes a shard stream already read (datasets/shard_stream.py)


@contextlib.contextmanager
def preloaded(data: Mapping[Path, bytes]) -> Iterator[None]:
    """Within the block, :func:`read_bytes` of a path in ``data`` returns its bytes without a read
    (a streamed clip's frames, loaded by the same item code as files)."""
    _PRELOADED.update(data)
    try:
        yield
    finally:
        _PRELOADED.clear()


def read_bytes(path: Path) -> bytes:
    """The file's (or tar shard member's) bytes; ``DataError`` (missing / unreadable / empty) naming it."""
    if _PRELOADED:
        hit = _PRELOADED.get(Path(path))
        if hit is not None:
            return hit
    try:
        data = read_path(path)  # a file, or a frame kept in a tar shard (datasets/shard_store.py)
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing", path=path, kind=F.MISSING_FILE) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})", path=path, kind=F.UNREADABLE_FILE) from None
    if not data:
        raise DataError(f"{path}: file is empty (0 bytes)", path=path, kind=F.UNREADABLE_FILE)
    return data


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """(W, H) from the JPEG's start-of-frame segment, or None if it cannot be found."""
    pos, n = 2, len(data)
    while pos + 9 < n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _SOF_MARKERS:
            h = (data[pos + 5] << 8) | data[pos + 6]
            w = (data[pos + 7] << 8) | data[pos + 8]
            return (w, h) if w and h else None
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any SOF
            return None
        pos += 2 + length
    return None


def has_jpeg_end(data: bytes) -> bool:
    """True if the end-of-image marker is present near the end (cheap truncation test)."""
    return b"\xff\xd9" in data[-64:]


def decode_image(
    path: Path, min_side: Optional[int] = None, backend: Optional[str] = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode ``path`` to RGB uint8 ``[3, h, w]``; ``min_side`` lets a JPEG decode at reduced scale
    as long as its shorter side stays >= ``min_side``. Returns the tensor and the stored ``(W, H)``."""
    data = read_bytes(path)
    backend = backend or jpeg_backend()
    if is_jpeg(data):
        if not has_jpeg_end(data):
            raise DataError(f"{path}: truncated JPEG (no end-of-image marker)", path=path, kind=F.TRUNCATED_JPEG)
        if backend == "auto":
            size = jpeg_size(data)
            draft_helps = size is not None and min_side is not None and min(size) >= 2 * min_side
            backend = "pil-draft" if draft_helps else "torchvision"
        if backend == "torchvision":
            return _decode_torchvision(data, path)
    return _decode_pil(data, path, min_side)


def _decode_torchvision(data: bytes, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:

    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise DataError(f"{path}: cannot decode JPEG ({e})", path=path, kind=F.UNREADABLE_FILE) from None
    return img, (int(img.shape[2]), int(img.shape[1]))


def _decode_pil(data: bytes, path: Path, min_side: Optional[int]) -> tuple[torch.Tensor, tuple[int, int]]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            if min_side and img.format == "JPEG":
                scale = min_side / max(1, min(size))
                if scale < 1:
                    img.draft("RGB", (max(1, int(np.ceil(size[0] * scale))), max(1, int(np.ceil(size[1] * scale)))))
            rgb = img.convert("RGB")
            arr = np.asarray(rgb)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        kind = F.TRUNCATED_JPEG if "truncated" in str(e) else F.UNREADABLE_FILE
        raise DataError(f"{path}: cannot decode image ({e})", path=path, kind=kind) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1), (int(size[0]), int(size[1]))


def decode_frames(
    paths: Sequence[Path], min_side: Optional[int] = None
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Decode a list of JPEG frames; returns per-frame tensors and stored sizes."""
    imgs, sizes = [], []
    for p in paths:
        img, size = decode_image(p, min_side)
        imgs.append(img)
        sizes.append(size)
    return imgs, sizes


class VideoFile:
    """A decord reader over one video: frame count, fps, and batched frame access."""

    def __init__(self, path: Path) -> None:
        import decord  # noqa: PLC0415  (a native video library: loaded when a video is first opened)

        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{path}: video file is missing", path=path, kind=F.MISSING_VIDEO)
        if self.path.stat().st_size == 0:
            raise DataError(f"{path}: video file is empty (0 bytes)", path=path, kind=F.UNREADABLE_FILE)
        try:
            self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except (decord.DECORDError, RuntimeError, ValueError) as e:
            raise DataError(
                f"{path}: cannot open video ({_first_line(e)})", path=path, kind=F.UNREADABLE_FILE
            ) from None
        if self.num_frames <= 0:
            raise DataError(f"{path}: video has no frames", path=path, kind=F.UNREADABLE_FILE)

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 ``[k, 3, H, W]`` of the given frame indices (one decord ``get_batch``)."""
        import decord  # noqa: PLC0415  (a native video library: loaded when a video is first opened)

        if not indices:
            return torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
        try:
            arr = self._vr.get_batch(list(indices)).asnumpy()
        except (decord.DECORDError, RuntimeError, IndexError) as e:
            raise DataError(
                f"{self.path}: cannot decode frames {list(indices)} ({_first_line(e)})",
                path=self.path,
                kind=F.UNREADABLE_FILE,
            ) from None
        return torch.from_numpy(arr).permute(0, 3, 1, 2)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
