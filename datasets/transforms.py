"""Geometric and photometric transforms for clips and images, with boxes kept consistent.

Evaluation (the RICE protocol, ``resize_mode="square"``): resize the whole frame to
``resize_size`` x ``resize_size`` (aspect not kept, as the official configs' ``Resize([256, 256])``),
center-crop ``image_size``, scale to [0, 1], normalise with CLIP mean/std. ``resize_mode="shorter"``
resizes the shorter side instead (aspect kept), which drops the top and bottom of a portrait frame
(a 9:16 livestream frame loses 44% of its height); the tiny profile keeps it because its committed
rows were measured with it (on lpr4m-synth's square frames both modes give the same pixels).
Training (``data_cfg.train_jitter``): a random resized crop (area scale in ``TRAIN_SCALE``, aspect
ratio in ``TRAIN_RATIO``) resized to ``image_size``, then a horizontal flip with probability 1/2.
The official code uses Resize(256x256) + RandomCrop(224) + flip; the random resized crop asked for
here is a stronger variant of the same family. In ``square`` mode the crop is drawn on the
``resize_size`` square canvas, i.e. on the squashed frame, as the official Resize-then-crop does.

One clip gets ONE geometric transform: the random crop is drawn once, in coordinates normalised by
the frame size, and applied to every frame. Boxes arrive in pixels of the *stored* frame and leave
as ``xyxy`` in [0, 1] of the transformed frame, with a validity flag (False when no box was given
or the box falls outside the crop).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from datasets.records import Box

TRAIN_SCALE = (0.75, 1.0)  # ~ the official Resize(256) + RandomCrop(224): (224/256)**2 = 0.77
TRAIN_RATIO = (3.0 / 4.0, 4.0 / 3.0)


@dataclass(frozen=True)
class TrainCrop:
    """A crop window in normalised coordinates of the source frame, and a flip flag."""

    x0: float
    y0: float
    w: float
    h: float
    flip: bool


RESIZE_MODES = ("square", "shorter")


def resized_size(w: int, h: int, shorter: int, mode: str = "shorter") -> tuple[int, int]:
    """(new_w, new_h): ``shorter`` x ``shorter`` in ``square`` mode, else the shorter side
    ``shorter`` with the aspect kept (torchvision's rounding)."""
    if mode == "square":
        return shorter, shorter
    if mode != "shorter":
        raise ValueError(f"resize_mode {mode!r}: expected one of {RESIZE_MODES}")
    if w <= h:
        return shorter, int(shorter * h / w)
    return int(shorter * w / h), shorter


def center_offsets(w: int, h: int, crop: int) -> tuple[int, int]:
    """(left, top) of a centered ``crop`` x ``crop`` window (torchvision's rounding)."""
    return int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))


def sample_train_crop(w: int, h: int, generator: Optional[torch.Generator] = None) -> TrainCrop:
    """A random-resized-crop window (torchvision's sampling) plus a flip coin, normalised."""
    area = w * h
    log_ratio = torch.log(torch.tensor(TRAIN_RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(*TRAIN_SCALE, generator=generator).item()
        ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=generator)).item()
        cw = int(round((target_area * ratio) ** 0.5))
        ch = int(round((target_area / ratio) ** 0.5))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator).item())
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator).item())
            break
    else:  # fall back to a central crop, as torchvision does
        ratio_in = w / h
        if ratio_in < TRAIN_RATIO[0]:
            cw, ch = w, int(round(w / TRAIN_RATIO[0]))
        elif ratio_in > TRAIN_RATIO[1]:
            ch, cw = h, int(round(h * TRAIN_RATIO[1]))
        else:
            cw, ch = w, h
        top, left = (h - ch) // 2, (w - cw) // 2
    flip = bool(torch.rand(1, generator=generator).item() < 0.5)
    return TrainCrop(left / w, top / h, cw / w, ch / h, flip)


def _stack(frames: Sequence[torch.Tensor], idx: Sequence[int]) -> torch.Tensor:
    """Stack ``[3, h, w]`` frames to ``[k, 3, h, w]`` in channels-last memory: decoders hand out
    HWC buffers, so this is a cheap copy, and torch's uint8 antialiased resize is fastest on it."""
    return torch.stack([frames[i].permute(1, 2, 0) for i in idx]).permute(0, 3, 1, 2)


def _groups_by_size(frames: Sequence[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault((int(f.shape[-1]), int(f.shape[-2])), []).append(i)
    return groups


INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def eval_geometry(
    frames: Sequence[torch.Tensor], resize: int, crop: int, mode: str = "shorter", interpolation: str = "bilinear"
) -> torch.Tensor:
    """uint8 ``[k, 3, crop, crop]``: resize (``mode``, see :func:`resized_size`; ``interpolation``
    bilinear or bicubic, antialiased), center crop ``crop``."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    if resize < crop:
        raise ValueError(f"resize_size {resize} is smaller than image_size {crop}")
    groups = _groups_by_size(frames)
    out = None if len(groups) == 1 else torch.empty(len(frames), 3, crop, crop, dtype=torch.uint8)
    for (w, h), idx in groups.items():
        batch = _stack(frames, idx)
        nw, nh = resized_size(w, h, resize, mode)
        batch = TF.resize(batch, [nh, nw], interpolation=INTERPOLATIONS[interpolation], antialias=True)
        left, top = center_offsets(nw, nh, crop)
        batch = batch[..., top : top + crop, left : left + crop]
        if out is None:
            return batch
        out[idx] = batch
    return out


def train_geometry(frames: Sequence[torch.Tensor], crop: TrainCrop, size: int) -> torch.Tensor:
    """uint8 ``[k, 3, size, size]``: the same normalised crop window on every frame, resized, flipped."""
    groups = _groups_by_size(frames)
    out = None if len(groups) == 1 else torch.empty(len(frames), 3, size, size, dtype=torch.uint8)
    for (w, h), idx in groups.items():
        batch = _stack(frames, idx)
        left, top = int(round(crop.x0 * w)), int(round(crop.y0 * h))
        cw, ch = max(1, int(round(crop.w * w))), max(1, int(round(crop.h * h)))
        cw, ch = min(cw, w - left), min(ch, h - top)
        batch = TF.resized_crop(
            batch, top, left, ch, cw, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        if crop.flip:
            batch = batch.flip(-1)
        if out is None:
            return batch
        out[idx] = batch
    return out


def normalise_boxes(
    boxes: Sequence[Optional[Box]], sizes: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored-pixel boxes -> ``[k, 4]`` in [0, 1] of the stored frame, and a validity mask."""
    rows = [
        (b[0] / w, b[1] / h, b[2] / w, b[3] / h) if b is not None else (0.0, 0.0, 0.0, 0.0)
        for b, (w, h) in zip(boxes, sizes)
    ]
    out = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 4)
    valid = torch.tensor([b is not None for b in boxes], dtype=torch.bool)
    return out.clamp_(0.0, 1.0), valid


def _finish(boxes: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = boxes.clamp(0.0, 1.0)
    valid = valid & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes * valid.unsqueeze(1), valid


def eval_boxes(
    boxes: torch.Tensor,
    valid: torch.Tensor,
    decoded_sizes: Sequence[tuple[int, int]],
    resize: int,
    crop: int,
    mode: str = "shorter",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised boxes of the stored frame -> normalised boxes of the resized, center-cropped frame."""
    if not bool(valid.any()):
        return torch.zeros_like(boxes), valid.clone()
    scale, shift = [], []
    for w, h in decoded_sizes:
        nw, nh = resized_size(w, h, resize, mode)
        left, top = center_offsets(nw, nh, crop)
        scale.append((nw, nh, nw, nh))
        shift.append((left, top, left, top))
    out = (boxes * torch.tensor(scale, dtype=boxes.dtype) - torch.tensor(shift, dtype=boxes.dtype)) / crop
    return _finish(out, valid)


def train_boxes(boxes: torch.Tensor, valid: torch.Tensor, crop: TrainCrop) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised boxes -> normalised boxes of the crop window (then flipped if the crop flips)."""
    origin = torch.tensor([crop.x0, crop.y0, crop.x0, crop.y0])
    scale = torch.tensor([crop.w, crop.h, crop.w, crop.h])
    out = (boxes - origin) / scale
    out = out.clamp(0.0, 1.0)
    if crop.flip:
        out = torch.stack([1 - out[:, 2], out[:, 1], 1 - out[:, 0], out[:, 3]], dim=1)
    return _finish(out, valid)


def to_float(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float ``(x / 255 - mean) / std``, contiguous, on ``x``'s device.

    With ``out`` (float, same shape) the result is written there in one converting copy plus two
    in-place passes, with no temporaries (allocation dominated the cost on small frames). The
    same three float32 operations run wherever ``x`` is, so a batch normalised on the training
    device equals one normalised in a DataLoader worker bit for bit (on the CPU)."""
    scale, shift = _affine(tuple(float(m) for m in mean), tuple(float(s) for s in std), x.device)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    out.copy_(x)
    return out.mul_(scale).sub_(shift)


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 / (255 std)`` and ``mean / std`` as float32 ``[3, 1, 1]`` on ``device``, built once per
    device (on a GPU a fresh table per batch would be a host-to-device copy every step)."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32).view(3, 1, 1)
    return scale.to(device), shift.to(device)
