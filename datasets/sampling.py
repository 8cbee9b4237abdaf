"""Frame sampling: T frames by ``linspace(0, n-1, T)``, padding with a temporal mask, the official
training-time tail cut, and the 1 fps candidate frames of a video.

Follows the RICE official code: ``np.linspace(0, n - 1, num=T, dtype=int)`` (truncation) when a clip
has more than T frames, every frame otherwise (then zero-padded, ``mask`` False on the padding); in
training, with probability 1/2 a fraction p in {0, 0.1, ..., 0.9} of the sampled frames is cut
from the tail (``keep = k - floor(k * p)``, at least one frame stays).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

TAIL_CUT_FRACTIONS = tuple(i / 10 for i in range(10))


def uniform_indices(n: int, num_frames: int) -> list[int]:
    """Indices of at most ``num_frames`` frames out of ``n``, uniformly spread, in order."""
    if n <= 0:
        return []
    if n <= num_frames:
        return list(range(n))
    return np.linspace(0, n - 1, num=num_frames, dtype=int).tolist()


def temporal_mask(num_real: int, num_frames: int) -> torch.Tensor:
    """Bool [num_frames], True for the first ``num_real`` positions."""
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[: min(num_real, num_frames)] = True
    return mask


def tail_cut(indices: Sequence[int], generator: Optional[torch.Generator] = None) -> list[int]:
    """The official training augmentation: with probability 1/2 drop a random tail fraction."""
    k = len(indices)
    if k == 0:
        return list(indices)
    draw = torch.rand(2, generator=generator)
    if draw[0].item() < 0.5:
        return list(indices)
    p = TAIL_CUT_FRACTIONS[min(int(draw[1].item() * len(TAIL_CUT_FRACTIONS)), len(TAIL_CUT_FRACTIONS) - 1)]
    keep = max(1, k - math.floor(k * p))
    return list(indices[:keep])


def video_candidates(num_video_frames: int, fps: float, sample_fps: Optional[float]) -> list[int]:
    """Video frame indices taken at ``sample_fps`` (``round(k * fps / sample_fps)``); all if None."""
    if num_video_frames <= 0:
        return []
    if sample_fps is None or not fps or fps <= 0 or fps <= sample_fps:
        return list(range(num_video_frames))
    step = fps / sample_fps
    count = int(math.floor((num_video_frames - 1) / step)) + 1
    out = [min(int(round(k * step)), num_video_frames - 1) for k in range(count)]
    return sorted(set(out))


def sample_clip(
    n: int, num_frames: int, *, train_cut: bool = False, generator: Optional[torch.Generator] = None
) -> list[int]:
    """Positions (into a list of ``n`` candidate frames) of the frames a clip item loads."""
    idx = uniform_indices(n, num_frames)
    return tail_cut(idx, generator) if train_cut else idx
