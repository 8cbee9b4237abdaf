"""Which frames of a batch are real, and which carry a box, as flat index tensors.

A batch's clips are padded to ``T`` frames (``frame_mask`` [B, T]) and only some frames have an
intent-product box (``box_mask``). A model that encodes only the real frames, or runs a
detector only on boxed ones, needs their positions; computing them on the GPU
(``nonzero``) makes the host wait for the device, so :func:`frame_indices` computes them
where the masks are built, in the DataLoader's workers (``datasets.torch_data.collate_batch``),
and the indices travel with the batch. Indices are flat positions in ``B * T`` (frames) or in
``B`` (clips), ascending. A batch whose masks are changed afterwards must drop these keys.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

INDEX_KEYS = ("frame_index", "boxed_index", "boxed_clips")


def frame_indices(frame_mask: Tensor, box_mask: Optional[Tensor] = None) -> dict[str, Tensor]:
    """``frame_index``: real frames; ``boxed_index``: real frames with a box; ``boxed_clips``:
    clips with at least one of them (the last two only when ``box_mask`` is given)."""
    real = frame_mask.bool()
    out = {"frame_index": torch.nonzero(real.flatten()).squeeze(1)}
    if box_mask is not None:
        boxed = box_mask.bool() & real
        out["boxed_index"] = torch.nonzero(boxed.flatten()).squeeze(1)
        out["boxed_clips"] = torch.nonzero(boxed.any(dim=1)).squeeze(1)
    return out
