"""Decoded-frame cache: JPEG frames and shop images decoded and resized once, kept as uint8.

Training reads every frame of the training clips once an epoch, and every run on the same
data evaluates the same test frames; decoding and resizing them again each time cost the
tiny demo's two cores about a third of the data loader's time. A :class:`FrameCache` holds
each image exactly as the loader would see it after its deterministic part: decoded
(:func:`datasets.decoding.decode_image`, same ``min_side``, same backend) and resized to the
profile's resize size (:func:`datasets.transforms.resized_size` in the profile's
``resize_mode``, the call :func:`~datasets.transforms.eval_geometry` makes). Everything random
(tail cut, random resized crop, flip) is still drawn per sample, on the cached pixels, with
the same calls on the global generator as without the cache:

* evaluation inputs are byte-identical with and without the cache (the resize is the one
  ``eval_geometry`` would make; resizing to the size an image already has is a no-op);
* training inputs are byte-identical when the decoded image is not larger than its resized size
  (lpr4m-synth's 128 px frames in the tiny profile). A larger image is stored resized, and the
  training crop, drawn on the canvas of the image as decoded (so the same random numbers are
  consumed), is cut from the resized pixels: one more resampling, not the same bytes.

On disk: ``<LPR_BENCH_CACHE or .cache>/frames/<key>/`` holds ``pixels.u8`` (all images, HWC,
concatenated; read through ``np.memmap``, so DataLoader workers share the page cache),
``index.npy`` (per image: offset, h, w, stored W/H, decoded W/H; offset -1 for a file that
failed to decode, which then falls back to the decoder and its ``error:``), ``paths.json`` and
``meta.json`` (hashes of the other three). The key hashes the format version, the caller's tag
(dataset name and annotation checksum, split side), the resize size and mode, the JPEG backend,
the decoder library versions and every file's path, size and modification time, so another
dataset, transform or file content cannot hit. A cache is built in a temporary folder and
renamed into place; a folder whose files do not match their recorded sizes and hashes
(partial, truncated, corrupted) is removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import PIL
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from benchmark.core.digest import sha256_file
from datasets import decoding
from datasets import transforms as T
from datasets.errors import DataError
from datasets.frame_selection import clip_positions
from datasets.shard_store import stat_target
from datasets.torch_data import GalleryDataset, PairDataset, QueryDataset

FORMAT_VERSION = 1
_COLS = 7  # offset, h, w, stored_w, stored_h, decoded_w, decoded_h


@dataclass(frozen=True)
class CacheSpec:
    """The transform settings an entry depends on."""

    resize_size: int
    resize_mode: str = "shorter"


def frame_cache_root() -> Path:
    env = os.environ.get("LPR_BENCH_CACHE")
    return (Path(env) if env else Path(__file__).resolve().parents[1] / ".cache") / "frames"


def _versions() -> dict[str, str]:

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__}


def cache_key(tag: str, paths: Sequence[Path], spec: CacheSpec) -> str:
    """sha256 over everything an entry's pixels depend on (see the module docstring)."""
    files = []
    for p in paths:
        try:
            st = os.stat(stat_target(p))  # a shard member: its tar's size and time
            files.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            files.append((str(p), -1, -1))
    blob = json.dumps(
        {
            "version": FORMAT_VERSION,
            "tag": tag,
            "spec": [spec.resize_size, spec.resize_mode],
            "backend": decoding.jpeg_backend(),
            "versions": _versions(),
            "files": files,
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def fit(img: torch.Tensor, spec: CacheSpec) -> torch.Tensor:
    """``[3, h, w]`` uint8 resized as :func:`~datasets.transforms.eval_geometry` resizes it, if that
    makes it smaller; an image it would enlarge is kept as decoded (fewer bytes, same result)."""

    w, h = int(img.shape[-1]), int(img.shape[-2])
    nw, nh = T.resized_size(w, h, spec.resize_size, spec.resize_mode)
    if nw * nh >= w * h:
        return img
    batch = img.permute(1, 2, 0).unsqueeze(0).permute(0, 3, 1, 2)  # channels-last, as eval_geometry stacks
    return TF.resize(batch, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)[0]


class _Decode(Dataset):
    def __init__(self, paths: Sequence[Path], spec: CacheSpec) -> None:
        self.paths, self.spec = list(paths), spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Optional[tuple[np.ndarray, tuple[int, int], tuple[int, int]]]:
        try:
            img, stored = decoding.decode_image(self.paths[i], min_side=self.spec.resize_size)
        except DataError:
            return None  # not cached: loading it decodes again and raises the decoder's error
        decoded = (int(img.shape[-1]), int(img.shape[-2]))
        return fit(img, self.spec).permute(1, 2, 0).contiguous().numpy(), stored, decoded


class FrameCache:
    """Cached images by path; :meth:`decode_frames` / :meth:`decode_image` replace the decoder."""

    def __init__(self, folder: Path, paths: Sequence[str], index: np.ndarray) -> None:
        self.folder = Path(folder)
        self.rows = {p: i for i, p in enumerate(paths)}
        self.index = index
        self.nbytes = int(os.path.getsize(self.folder / "pixels.u8"))
        self._pixels: Optional[np.memmap] = None
        self.misses = 0  # images read through the decoder (not cached, or failed to decode)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the memmap themselves
        return {**self.__dict__, "_pixels": None}

    def __len__(self) -> int:
        return len(self.rows)

    def _get(self, path: Path, min_side: Optional[int]) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        row = self.rows.get(str(path))
        if row is None or self.index[row, 0] < 0:
            self.misses += 1
            img, stored = decoding.decode_image(path, min_side=min_side)
            return img, stored, (int(img.shape[-1]), int(img.shape[-2]))
        if self._pixels is None:
            self._pixels = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="r") if self.nbytes else None
        off, h, w, sw, sh, dw, dh = (int(v) for v in self.index[row])
        hwc = np.array(self._pixels[off : off + h * w * 3]).reshape(h, w, 3)  # type: ignore[index]
        return torch.from_numpy(hwc).permute(2, 0, 1), (sw, sh), (dw, dh)

    def decode_frames(self, paths: Sequence[Path], min_side: Optional[int] = None):
        """(frames ``[3, h, w]``, stored ``(W, H)``, decoded ``(W, H)`` before the cache's resize)."""
        got = [self._get(p, min_side) for p in paths]
        return [g[0] for g in got], [g[1] for g in got], [g[2] for g in got]

    def decode_image(self, path: Path, min_side: Optional[int] = None):
        return self._get(path, min_side)

    # --- building and opening ------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path) -> Optional["FrameCache"]:
        """The cache in ``folder`` if every file matches ``meta.json``; None otherwise."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("version") != FORMAT_VERSION or meta.get("key") != folder.name:
                return None
            for name in ("pixels.u8", "index.npy", "paths.json"):
                f = folder / name
                if f.stat().st_size != meta["sizes"][name] or sha256_file(f) != meta["sha256"][name]:
                    return None
            index = np.load(folder / "index.npy", allow_pickle=False)
            paths = json.loads((folder / "paths.json").read_text())
            if index.shape != (len(paths), _COLS) or index.dtype != np.int64:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(folder, paths, index)

    @classmethod
    def build(cls, folder: Path, paths: Sequence[Path], spec: CacheSpec, num_workers: int = 0) -> "FrameCache":
        """Decode ``paths`` (``num_workers`` processes) into a new folder, renamed to ``folder``."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            index = np.full((len(paths), _COLS), -1, dtype=np.int64)
            offset = 0
            loader = DataLoader(_Decode(paths, spec), batch_size=64, num_workers=num_workers, collate_fn=list)
            with open(tmp / "pixels.u8", "wb") as f:
                i = 0
                for batch in loader:
                    for item in batch:
                        if item is not None:
                            arr, stored, decoded = item
                            f.write(arr.tobytes())
                            index[i] = (offset, arr.shape[0], arr.shape[1], *stored, *decoded)
                            offset += arr.size
                        i += 1
                f.flush()
                os.fsync(f.fileno())
            np.save(tmp / "index.npy", index, allow_pickle=False)
            (tmp / "paths.json").write_text(json.dumps([str(p) for p in paths]))
            names = ("pixels.u8", "index.npy", "paths.json")
            meta = {
                "version": FORMAT_VERSION,
                "key": folder.name,
                "spec": [spec.resize_size, spec.resize_mode],
                "sizes": {n: (tmp / n).stat().st_size for n in names},
                "sha256": {n: sha256_file(tmp / n) for n in names},
            }
            (tmp / "meta.json").write_text(json.dumps(meta))  # written last: the folder is complete
            _discard(folder)  # a stale or corrupt cache under the same key
            try:
                os.rename(tmp, folder)
            except OSError:  # another process renamed its copy first: use it
                if cls.open(folder) is None:
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        cache = cls.open(folder)
        if cache is None:
            raise OSError(f"{folder}: the frame cache just written does not verify")
        return cache


def _discard(folder: Path) -> None:
    """Move a folder aside, then delete it (a half-deleted cache is never left under its key)."""
    if folder.exists():
        trash = folder.with_name(f".{folder.name}.trash-{uuid.uuid4().hex[:8]}")
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def estimate_bytes(paths: Sequence[Path], spec: CacheSpec, sample: int = 64) -> int:
    """The cache's size from the JPEG headers of up to ``sample`` files (no decoding)."""
    if not paths:
        return 0
    step = max(1, len(paths) // sample)
    sizes = []
    for p in list(paths)[::step][:sample]:
        try:
            with open(p, "rb") as f:
                size = decoding.jpeg_size(f.read(1 << 16))
        except OSError:
            size = None
        w, h = size or (spec.resize_size, spec.resize_size)
        nw, nh = T.resized_size(w, h, spec.resize_size, spec.resize_mode)
        sizes.append(3 * min(nw * nh, w * h) if size else 3 * nw * nh)
    return int(len(paths) * sum(sizes) / len(sizes))


def prepare(
    tag: str,
    paths: Iterable[Path],
    spec: CacheSpec,
    *,
    num_workers: int = 0,
    root: Optional[Path] = None,
    max_bytes: Optional[int] = None,
    log: Callable[[str], None] = lambda s: None,
    label: Optional[str] = None,
) -> Optional[FrameCache]:
    """Open the cache of these images, building it if needed; None where it would not fit.

    It must fit in half the free disk space and in ``max_bytes`` (default: the environment
    variable ``LPR_BENCH_FRAME_CACHE_MAX_GB``, else 32 GiB)."""
    unique = sorted({str(p) for p in paths})
    if not unique:
        return None
    root = Path(root) if root is not None else frame_cache_root()
    plist = [Path(p) for p in unique]
    folder = root / cache_key(tag, plist, spec)
    name = label or tag
    t0 = time.perf_counter()
    cache = FrameCache.open(folder) if folder.exists() else None
    if cache is not None:
        log(f"frame cache: {name}: {len(cache)} images, {cache.nbytes / 2**20:.0f} MiB from {folder}")
        return cache
    need = estimate_bytes(plist, spec)
    if max_bytes is None:
        max_bytes = int(float(os.environ.get("LPR_BENCH_FRAME_CACHE_MAX_GB", "32")) * 2**30)
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if need > max_bytes or 2 * need > free:
        log(
            f"frame cache: {name}: off (about {need / 2**30:.1f} GiB needed; limit {max_bytes / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB free)"
        )
        return None
    if folder.exists():
        log(f"frame cache: {name}: {folder} is incomplete or corrupt; rebuilding it")
    cache = FrameCache.build(folder, plist, spec, num_workers=num_workers)
    log(
        f"frame cache: {name}: {len(cache)} images, {cache.nbytes / 2**20:.0f} MiB built in "
        f"{time.perf_counter() - t0:.1f} s at {folder}"
    )
    return cache


def dataset_paths(dataset: Any) -> list[Path]:
    """The JPEG frames and images a torch dataset of :mod:`datasets.torch_data` reads: a clip's
    positions at T (:func:`datasets.frame_selection.clip_positions`; training's tail cut keeps a
    prefix of them, so no other frame is ever read) and the shop images. Video clips
    (MovingFashion) are not cached."""

    cfg = dataset.cfg
    out: list[Path] = []

    def clip_paths(clip: Any) -> None:
        if clip.video_path is not None or not clip.frame_paths:
            return
        out.extend(clip.frame_paths[p] for p in clip_positions(clip, cfg.num_frames))

    if isinstance(dataset, PairDataset):
        for pair in dataset.pairs:
            clip_paths(pair.clip)
            out.append(pair.image_path)
    elif isinstance(dataset, QueryDataset):
        for q in dataset.queries:
            if not q.missing:
                clip_paths(q.clip)
    elif isinstance(dataset, GalleryDataset):
        out.extend(g.image_path for g in dataset.items)
    else:
        raise TypeError(f"no frame cache for {type(dataset).__name__}")
    return [Path(p) for p in out]


def attach(
    dataset: Any,
    tag: str,
    *,
    num_workers: int = 0,
    root: Optional[Path] = None,
    log: Callable[[str], None] = lambda s: None,
) -> Any:
    """Give ``dataset`` the frame cache of the images it reads (built if needed); returns it.
    ``tag`` names the data (dataset name, annotation checksum, side) for the key."""
    spec = CacheSpec(dataset.cfg.resize_size, getattr(dataset.cfg, "resize_mode", "shorter"))
    parts = tag.split("/")
    dataset.frame_cache = prepare(
        tag,
        dataset_paths(dataset),
        spec,
        num_workers=num_workers,
        root=root,
        log=log,
        label=f"{parts[0]} {parts[-1]}" if len(parts) > 1 else tag,
    )
    return dataset
