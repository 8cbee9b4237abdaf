"""Pixels leave the DataLoader as uint8 and become the model's float input on the device.

The workers hand over ``frames`` uint8 ``[B, T, 3, S, S]`` and ``image`` uint8 ``[B, 3, S, S]``
(a quarter of float32's bytes through shared memory, pinning and the host-to-device copy);
:func:`normalise_pixels`, called right after the copy (``benchmark.training.engine.to_device``),
turns them into the float ``(x / 255 - mean) / std`` of the batch contract in ``methods/base.py``
with the same float32 operations the workers used to run (:func:`datasets.transforms.to_float`),
and sets padding frames (``frame_mask`` False) to float zeros, not normalised black, as before.
On the CPU the result equals the old worker-side float batch bit for bit.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from datasets.transforms import to_float

PIXEL_KEYS = ("frames", "image")


def has_raw_pixels(batch: dict[str, Any]) -> bool:
    """Whether ``batch`` still holds uint8 pixels (a collated batch not yet normalised)."""
    return any(isinstance(batch.get(k), torch.Tensor) and batch[k].dtype == torch.uint8 for k in PIXEL_KEYS)


def normalise_pixels(batch: dict[str, Any], mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """``batch`` with its uint8 ``frames``/``image`` as normalised float32 on their own device;
    other fields (and pixels already float) are passed through. A new dict; inputs untouched."""
    out = dict(batch)
    image = batch.get("image")
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
        out["image"] = to_float(image, mean, std)
    frames = batch.get("frames")
    if isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8:
        mask = batch.get("frame_mask")
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(frames.shape[:-3]):
            raise ValueError(
                f"uint8 frames {tuple(frames.shape)} need a frame_mask of shape {tuple(frames.shape[:-3])}"
            )
        real = to_float(frames, mean, std)
        # padding was float +0.0 after the workers' normalisation: masked_fill writes +0.0 (x * 0 would give -0.0)
        out["frames"] = real.masked_fill_(~mask.bool().view(*mask.shape, 1, 1, 1), 0.0)
    return out
