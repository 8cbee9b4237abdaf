"""Frame selection for methods that take a fixed number of frames per clip.

Video re-id methods (NVAN, MGH) see ``n`` frames, one per chunk of the clip's real frames: a
random one in training, the first one at test (after Li et al., CVPR 2018). Two chunking rules:

* ``"ste-nvan"``, STE-NVAN's ``util/utils.py`` (``Video_train_Dataset`` / ``Video_test_Dataset``):
  chunks of ``ceil(F / n)`` frames, the list padded with the last frame to ``n`` chunks (a clip
  shorter than ``n`` takes each frame once, then repeats the last), e.g. 10 frames into 8 give
  ``[0, 2, 4, 6, 8, 9, 9, 9]`` at test; in training a chunk's pick is uniform over its
  ``ceil(F / n)`` slots, padding slots included (they hold the last frame);
* ``"equal"``: ``n`` chunks as equal as integers allow (``floor(i F / n)``), a short clip
  repeating each frame in temporal order (3 into 4: ``[0, 0, 1, 2]``), the default of the
  image methods that average frames (FashionNet, AsymNet). The two rules agree whenever ``F`` is
  a multiple of ``n`` and differ on the tail-cut training clips.

Padding (``frame_mask`` False) is never selected.

:func:`frames_and_images` runs a per-image network over a batch's frames and shop images in one
call. With BatchNorm in the network this matters: in training, separate calls normalise each
side by its own batch's statistics, while at test time both sides are normalised by the
running statistics, a blend of the two; in one call training sees the same blend as testing.
A network with domain-specific BatchNorm (``methods.domain_norm``) instead runs each side on its
own statistics, in training and at test alike.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from methods.domain_norm import FRAME, SHOP, domain_forward, has_domain_batchnorm


def real_first_order(mask: Tensor) -> Tensor:
    """[B, T] permutation putting each row's real frames first, in temporal order."""
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)


CHUNK_RULES = ("ste-nvan", "equal")


def chunk_indices(
    lengths: Tensor, n: int, training: bool, generator: Optional[torch.Generator] = None, rule: str = "equal"
) -> Tensor:
    """[B, n] positions in ``range(length)``: one per chunk (``rule``: see the module docstring).

    ``training``: a uniformly random position inside each chunk; otherwise its first. A
    length of 0 is treated as 1 (position 0).
    """
    if rule not in CHUNK_RULES:
        raise ValueError(f"frame chunking rule {rule!r}: expected one of {CHUNK_RULES}")
    k = lengths.clamp_min(1).to(torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64, device=lengths.device)[None, :]
    if rule == "ste-nvan":
        size = torch.ceil(k / n)
        start = i * size
        end = start + size
    else:
        start = torch.floor(i * k / n)
        end = torch.maximum(torch.floor((i + 1) * k / n), start + 1)
    if training:
        u = torch.rand(start.shape, generator=generator, dtype=torch.float64, device="cpu").to(lengths.device)
        pos = start + torch.floor(u * (end - start))
    else:
        pos = start
    return pos.clamp(max=k - 1).long()  # "ste-nvan": a padding slot holds the last frame


def select_frames(
    frames: Tensor, mask: Tensor, n: Optional[int], training: bool, rule: str = "equal"
) -> tuple[Tensor, Tensor]:
    """``frames`` [B, T, ...] -> ([B, n, ...], all-True mask [B, n]) by chunk sampling (``rule``).

    ``n=None`` keeps every frame slot and only moves real frames first (mask reordered).
    """
    order = real_first_order(mask)
    lengths = mask.sum(1)
    if n is None:
        idx = order
        new_mask = torch.gather(mask, 1, order)
        if not bool(new_mask[:, 0].all()):  # empty clips keep one (zero) frame
            new_mask = new_mask.clone()
            new_mask[:, 0] = True
    else:
        pos = chunk_indices(lengths, n, training, rule=rule)
        idx = torch.gather(order, 1, pos)
        new_mask = torch.ones(idx.shape, dtype=torch.bool, device=mask.device)
    view = idx.view(*idx.shape, *([1] * (frames.ndim - 2))).expand(-1, -1, *frames.shape[2:])
    return torch.gather(frames, 1, view), new_mask


def frames_and_images(net: Callable[[Tensor], Tensor], frames: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
    """``net`` on frames [B, T, ...] and images [N, ...] in one call (shared BatchNorm batch
    statistics): ([B, T, ...out], [N, ...out]). A ``net`` with domain-specific BatchNorm runs
    frames and images on their own statistics (two calls)."""
    b, t = frames.shape[:2]
    if isinstance(net, torch.nn.Module) and has_domain_batchnorm(net):
        out_frames = domain_forward(net, FRAME, frames.flatten(0, 1))
        return out_frames.unflatten(0, (b, t)), domain_forward(net, SHOP, images)
    out = net(torch.cat([frames.flatten(0, 1), images]))
    return out[: b * t].unflatten(0, (b, t)), out[b * t :]
