"""PyTorch datasets producing the batch format of ``methods/base.py``.

* :class:`PairDataset` (training pairs): clip side + image side + ``product``/``category`` ids.
* :class:`QueryDataset` (test clips): clip side only.
* :class:`GalleryDataset` (shop images): image side only.
* :func:`collate_batch`: stacks tensors (in a worker, straight into shared memory, as torch's
  default collate does), keeps strings as lists, ints as long tensors, and adds the flat indices
  of the real and the boxed frames (:mod:`benchmark.core.frame_index`).

Pixels stay uint8 here: ``frames`` uint8 [T, 3, S, S] (zeros on padding), ``image`` uint8
[3, S, S]; the harness normalises them to the float input of ``methods/base.py`` on the device,
after the host-to-device copy (:func:`datasets.pixels.normalise_pixels`, from
``benchmark.training.engine.to_device``).

Clip side: ``frames`` uint8 [T, 3, S, S], ``frame_mask`` bool [T] (False on padding), ``boxes``
float [T, 4] xyxy in [0, 1] of the transformed frame, ``box_mask`` bool [T], ``asr`` str. A
missing query clip (``Query.missing``) yields zero frames and an all-False ``frame_mask``. Every
item carries ``index`` (its position in the split). Unreadable files raise ``DataError``, as
:class:`WorkerDataError`, whose one-line message survives DataLoader worker processes.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
from typing import Any, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from benchmark.core.config import DataConfig
from benchmark.core.frame_index import frame_indices
from datasets import transforms as T
from datasets.decoding import VideoFile, decode_frames, decode_image
from datasets.errors import DataError
from datasets.frame_selection import clip_positions
from datasets.prepare_report import boxes_in_stored_pixels
from datasets.records import Box, ClipSource, GalleryItem, Query, TrainPair
from datasets.sampling import sample_clip, temporal_mask, video_candidates

_NOTE = "lpr-bench data error: "  # marks the note that carries the original error through a worker


class WorkerDataError(DataError):
    """A ``DataError`` met while loading an item, in a form that survives DataLoader workers.

    torch re-raises a worker's exception in the main process as ``type(exc)(text)``, the text
    being the worker's whole traceback (25 lines where the user was promised one). The
    original message, path and kind travel as a note of that traceback; this constructor
    finds them there, so the main process raises the same one-line error as with
    ``--num-workers 0``.
    """

    def __init__(self, message: str, *, path: Optional[str] = None, kind: str = "") -> None:
        if message.startswith("Caught ") and _NOTE in message:
            try:
                record = json.loads(message.rsplit(_NOTE, 1)[1].splitlines()[0])
                message, path, kind = str(record["message"]), record.get("path"), str(record.get("kind") or "")
            except (ValueError, KeyError, TypeError, IndexError):
                pass  # not ours after all: keep torch's text
        super().__init__(message, path=path, kind=kind)


def one_line_errors(getitem):
    """Decorate a ``__getitem__``: a ``DataError`` leaves it as a :class:`WorkerDataError`."""

    @functools.wraps(getitem)
    def wrapper(self, i):
        try:
            return getitem(self, i)
        except WorkerDataError:
            raise
        except DataError as exc:
            err = WorkerDataError(str(exc), path=exc.path, kind=exc.kind)
            err.add_note(_NOTE + json.dumps({"message": str(exc), "path": exc.path, "kind": exc.kind}))
            raise err from None

    return wrapper


def load_clip(clip: ClipSource, cfg: DataConfig, *, train: bool = False, cache: Any = None) -> dict[str, Any]:
    """Decode, sample and transform one clip into the clip-side fields of an item; JPEG frames
    come from ``cache`` (a :class:`datasets.frame_cache.FrameCache`) when one is given."""
    n_t, size = cfg.num_frames, cfg.image_size
    jitter = train and cfg.train_jitter
    spatial = jitter and cfg.train_spatial
    pick = cfg.eval_frame_pick if (not train and cfg.eval_frame_pick) else clip.frame_pick
    frames: list[torch.Tensor] = []
    stored: list[tuple[int, int]] = []
    decoded: list[tuple[int, int]] = []  # (W, H) as decoded, before a frame cache's resize
    boxes: list[Optional[Box]] = []
    if clip.video_path is not None:
        video = VideoFile(clip.video_path)
        cands = video_candidates(video.num_frames, video.fps, clip.sample_fps)
        picked = [cands[p] for p in sample_clip(len(cands), n_t, train_cut=jitter, pick=pick)]
        batch = video.get(picked)
        frames = list(batch.unbind(0))
        stored = [(int(batch.shape[3]), int(batch.shape[2]))] * len(frames)
        decoded = stored
        tol = int(round(video.fps / (2 * clip.sample_fps))) if clip.sample_fps and video.fps else 0
        boxes = [_nearest_box(clip.boxes, i, tol) for i in picked]
    elif clip.frame_paths:
        source = clip if pick == clip.frame_pick else dataclasses.replace(clip, frame_pick=pick)
        positions = clip_positions(source, n_t, train_cut=jitter)
        paths = [clip.frame_paths[p] for p in positions]
        if cache is not None:
            frames, stored, decoded = cache.decode_frames(paths, min_side=cfg.resize_size)
        else:
            frames, stored = decode_frames(paths, min_side=cfg.resize_size)
            decoded = [(int(f.shape[-1]), int(f.shape[-2])) for f in frames]
        boxes = [clip.boxes.get(p) for p in positions]
        if clip.box_space == "original":  # LPR4M release: boxes in original pixels, frames resized
            boxes = boxes_in_stored_pixels(boxes, [clip.frame_paths[p] for p in positions], stored)
    out_frames = torch.zeros(n_t, 3, size, size, dtype=torch.uint8)  # padding stays zero
    out_boxes = torch.zeros(n_t, 4)
    box_mask = torch.zeros(n_t, dtype=torch.bool)
    k = len(frames)
    if k:
        norm_boxes, valid = T.normalise_boxes(boxes, stored)
        if spatial:
            crop = T.sample_train_crop(*_train_canvas(decoded[0], cfg))
            pixels = T.train_geometry(frames, crop, size)
            norm_boxes, valid = T.train_boxes(norm_boxes, valid, crop)
        else:
            pixels = T.eval_geometry(frames, cfg.resize_size, size, cfg.resize_mode, cfg.interpolation)
            resized = [(int(f.shape[-1]), int(f.shape[-2])) for f in frames]
            norm_boxes, valid = T.eval_boxes(norm_boxes, valid, resized, cfg.resize_size, size, cfg.resize_mode)
        out_frames[:k] = pixels
        out_boxes[:k] = norm_boxes
        box_mask[:k] = valid
    return {
        "frames": out_frames,
        "frame_mask": temporal_mask(k, n_t),
        "boxes": out_boxes,
        "box_mask": box_mask,
        "asr": clip.asr,
        "clip_id": clip.clip_id,
    }


def load_image(path, cfg: DataConfig, *, train: bool = False, cache: Any = None) -> torch.Tensor:
    """Decode (or read from ``cache``) and transform one shop image to uint8 ``[3, S, S]``."""
    if cache is not None:
        img, _, canvas = cache.decode_image(path, min_side=cfg.resize_size)
    else:
        img, _ = decode_image(path, min_side=cfg.resize_size)
        canvas = (int(img.shape[-1]), int(img.shape[-2]))
    if train and cfg.train_jitter and cfg.train_spatial:
        crop = T.sample_train_crop(*_train_canvas(canvas, cfg))
        pixels = T.train_geometry([img], crop, cfg.image_size)
    else:
        pixels = T.eval_geometry([img], cfg.resize_size, cfg.image_size, cfg.resize_mode, cfg.interpolation)
    return pixels[0].contiguous()


def _train_canvas(decoded: tuple[int, int], cfg: DataConfig) -> tuple[int, int]:
    """(W, H) the random crop is drawn on: the squashed square in ``square`` mode, else the frame
    as decoded (also when a frame cache holds it resized: the same random numbers are drawn)."""
    if cfg.resize_mode == "square":
        return cfg.resize_size, cfg.resize_size
    return int(decoded[0]), int(decoded[1])


def _nearest_box(boxes: Mapping[int, Box], index: int, tolerance: int) -> Optional[Box]:
    if not boxes:
        return None
    if index in boxes:
        return boxes[index]
    if tolerance <= 0:
        return None
    keys = sorted(boxes)
    pos = bisect.bisect_left(keys, index)
    best = None
    for j in (pos - 1, pos):
        if 0 <= j < len(keys) and abs(keys[j] - index) <= tolerance:
            if best is None or abs(keys[j] - index) < abs(best - index):
                best = keys[j]
    return None if best is None else boxes[best]


class PairDataset(Dataset):
    """Training pairs -> clip side + image side + ``product`` and ``category`` (-1 unknown);
    with ``live_groups`` (one livestream key per pair, given when batches are grouped by
    livestream) also ``live``, the livestream's index, for methods that mine negatives in it."""

    frame_cache: Any = None  # a datasets.frame_cache.FrameCache (datasets.frame_cache.attach)

    def __init__(
        self,
        pairs: Sequence[TrainPair],
        data_cfg: DataConfig,
        product_index: Mapping[str, int],
        category_index: Mapping[str, int],
        train: bool = True,
        live_groups: Optional[Sequence[str]] = None,
    ) -> None:
        self.pairs = list(pairs)
        if live_groups is not None and len(live_groups) != len(self.pairs):
            raise ValueError(f"live_groups has {len(live_groups)} keys for {len(self.pairs)} pairs")
        index = {k: j for j, k in enumerate(sorted(set(live_groups or ())))}
        self.live = [index[k] for k in live_groups] if live_groups is not None else None
        self.cfg = data_cfg
        self.product_index = product_index
        self.category_index = category_index
        self.train = train

    def __len__(self) -> int:
        return len(self.pairs)

    @one_line_errors
    def __getitem__(self, i: int) -> dict[str, Any]:
        pair = self.pairs[i]
        item = load_clip(pair.clip, self.cfg, train=self.train, cache=self.frame_cache)
        item["image"] = load_image(pair.image_path, self.cfg, train=self.train, cache=self.frame_cache)
        item["title"] = pair.title
        item["image_id"] = pair.image_id
        item["product"] = self.product_index[pair.product_id]
        item["category"] = self.category_index.get(pair.category, -1) if pair.category else -1
        item["index"] = i
        if self.live is not None:
            item["live"] = self.live[i]
        return item


class QueryDataset(Dataset):
    """Test clips -> clip side; a missing clip has an all-False ``frame_mask``."""

    frame_cache: Any = None

    def __init__(self, queries: Sequence[Query], data_cfg: DataConfig) -> None:
        self.queries = list(queries)
        self.cfg = data_cfg

    def __len__(self) -> int:
        return len(self.queries)

    @one_line_errors
    def __getitem__(self, i: int) -> dict[str, Any]:
        q = self.queries[i]
        clip = ClipSource(clip_id=q.query_id, asr=q.clip.asr) if q.missing else q.clip
        item = load_clip(clip, self.cfg, train=False, cache=self.frame_cache)
        item["index"] = i
        return item


class GalleryDataset(Dataset):
    """Shop images -> image side."""

    frame_cache: Any = None

    def __init__(self, items: Sequence[GalleryItem], data_cfg: DataConfig) -> None:
        self.items = list(items)
        self.cfg = data_cfg

    def __len__(self) -> int:
        return len(self.items)

    @one_line_errors
    def __getitem__(self, i: int) -> dict[str, Any]:
        g = self.items[i]
        return {
            "image": load_image(g.image_path, self.cfg, train=False, cache=self.frame_cache),
            "title": g.title,
            "image_id": g.image_id,
            "index": i,
        }


def collate_batch(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack a list of item dicts into the batch dict of ``methods/base.py``."""
    if not items:
        raise ValueError("collate_batch got an empty list")
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            batch[key] = default_collate(values)  # in a worker: stacked into shared memory, no extra copy
        elif isinstance(first, str):
            batch[key] = list(values)
        elif isinstance(first, (int, bool)):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            raise TypeError(f"collate_batch: field {key!r} has unsupported type {type(first).__name__}")
    if isinstance(batch.get("frame_mask"), torch.Tensor):  # in the workers, not on the device's critical path
        batch.update(frame_indices(batch["frame_mask"], batch.get("box_mask")))
    return batch
