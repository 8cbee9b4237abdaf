"""Frame sampling: T frames by ``linspace(0, n-1, T)``, padding with a temporal mask, the official
training-time tail cut, and the 1 fps candidate frames of a video.

Follows the RICE official code: ``np.linspace(0, n - 1, num=T, dtype=int)`` (truncation) when a clip
has more than T frames, every frame otherwise (then zero-padded, ``mask`` False on the padding); in
training, with probability 1/2 a fraction p in {0, 0.1, ..., 0.9} of the sampled frames is cut
from the tail (``keep = k - floor(k * p)``, at least one frame stays).

MovingFashion, as RICE's ``prepare_movingfashion.py`` prepares it: candidates are the frames
``ffmpeg -vf fps=1`` writes (:func:`video_candidates`), then at most T of them by
``np.linspace(0, n, T, endpoint=False, dtype=int)`` (pick ``"rice-mf"``; it never takes the last
candidate). ``"linspace"`` (the LPR4M rule above) stays the default pick of ``movingfashion-synth``,
whose committed rows were measured with it (see ``datasets/movingfashion.py``).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np
import torch

TAIL_CUT_FRACTIONS = tuple(i / 10 for i in range(10))


FRAME_PICKS = ("linspace", "rice-mf")


def uniform_indices(n: int, num_frames: int, pick: str = "linspace") -> list[int]:
    """Indices of at most ``num_frames`` frames out of ``n``, uniformly spread, in order."""
    if n <= 0:
        return []
    if n <= num_frames:
        return list(range(n))
    if pick == "rice-mf":
        return np.linspace(0, n, num=num_frames, endpoint=False, dtype=int).tolist()
    if pick != "linspace":
        raise ValueError(f"frame pick {pick!r}: expected one of {FRAME_PICKS}")
    return np.linspace(0, n - 1, num=num_frames, dtype=int).tolist()


def prepared_positions(n: int, frames_per_clip: int) -> list[int]:
    """Positions of a clip's ``n`` annotated frames that a root prepared with ``--frames-per-clip T``
    holds: the linspace rule at T (``datasets/frame_selection.py``); every frame when T is 0."""
    return list(range(n)) if frames_per_clip <= 0 else uniform_indices(n, frames_per_clip)


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
    """The frames ``ffmpeg -vf fps=<sample_fps>`` outputs from a constant-rate video; all if None.

    ffmpeg's fps filter (``round=near``) maps frame i to output slot ``round(i * r / fps)`` (half
    away from zero) and fills slot k with the LAST frame mapped at or before it, i.e. the last
    frame before ``(k + 1/2) / r`` seconds: index ``ceil((k + 1/2) * fps / r) - 1``; it writes
    ``round(n * r / fps)`` slots (at least one). Checked against libavfilter (PyAV) on
    12 frames at 4 fps -> [1, 5, 9], 39 at 25 fps -> [12, 37]. At the synthetic sets' 2 fps this is
    ``[0, 2, 4, ...]``, what the earlier nearest-frame rule gave.
    """
    if num_video_frames <= 0:
        return []
    if sample_fps is None or not fps or fps <= 0 or fps <= sample_fps:
        return list(range(num_video_frames))
    ratio = Fraction(fps).limit_denominator(1001) / Fraction(sample_fps).limit_denominator(
        1001
    )  # input frames per slot
    slots = max(1, int(math.floor(num_video_frames / ratio + Fraction(1, 2))))
    out = [min(int(math.ceil((k + Fraction(1, 2)) * ratio)) - 1, num_video_frames - 1) for k in range(slots)]
    return sorted(set(out))


def sample_clip(
    n: int,
    num_frames: int,
    *,
    train_cut: bool = False,
    generator: Optional[torch.Generator] = None,
    pick: str = "linspace",
) -> list[int]:
    """Positions (into a list of ``n`` candidate frames) of the frames a clip item loads."""
    idx = uniform_indices(n, num_frames, pick)
    return tail_cut(idx, generator) if train_cut else idx
