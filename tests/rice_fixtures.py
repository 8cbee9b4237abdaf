"""Small RICE models and random batches for the RICE tests (no dataset, no network)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch

from methods.base import DataInfo, build_method
from methods.rice import Rice

# the tiny profile's 112 px / patch 16 (7x7 grid), narrowed so that a step takes milliseconds
SMALL = {
    "encoder.width": 64,
    "encoder.layers": 2,
    "encoder.heads": 2,
    "encoder.embed_dim": 32,
    "encoder.text_width": 32,
    "encoder.text_layers": 1,
    "encoder.text_heads": 2,
    "encoder.context_length": 16,
    "det_dim": 32,
    "det_heads": 2,
    "det_layers": 1,
}


def small_rice(num_frames: int = 3, **overrides: Any) -> Rice:
    """The tiny RICE, small. Its Chinese-CLIP text tower's dropout (0.1, cn-clip's configs) is
    switched off, so two train-mode passes over a toy batch agree (as with the OpenAI tower)."""
    info = DataInfo(num_products=50, num_categories=4, num_frames=num_frames, image_size=112)
    model = build_method(Rice, "tiny", info, {**SMALL, **overrides})
    if model.encoder.text_tower is not None:
        for module in model.encoder.text_tower.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model


def toy_batch(b: int = 4, t: int = 3, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.ones(b, t, dtype=torch.bool)
    if b > 1:
        frame_mask[1, t - 1 :] = False  # the second clip has one padding frame
    boxes = torch.tensor([0.1, 0.2, 0.5, 0.6]).repeat(b, t, 1)
    box_mask = frame_mask.clone()
    box_mask[0, 0] = False  # one real frame without a label
    frames = torch.randn(b, t, 3, 112, 112, generator=g)
    frames[~frame_mask] = 0.0
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "boxes": boxes,
        "box_mask": box_mask,
        "asr": [f"asr words {i}" if i % 3 else "" for i in range(b)],
        "image": torch.randn(b, 3, 112, 112, generator=g),
        "title": [f"title {i}" for i in range(b)],
        "product": torch.arange(b),
        "category": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
    }


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread per test process: these models are tiny, and on a shared 2-core
    machine (or ``pytest -n 2``) a second thread per process only adds contention (measured
    here: a toy training step took 0.3 s with one thread and 4.8 s with two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# the paper profile's architecture (patchify stem, no BatchNorm, 8 PMD heads, all frames to the
# detector) at the same small shapes, from random weights
PAPER_SMALL = {
    **SMALL,
    "encoder.model_name": "custom",
    "encoder.pretrained": None,
    "require_pretrained": False,
    "encoder.image_size": 112,
    "encoder.patch_size": 16,
    "encoder.quick_gelu": True,
    "pmd_heads": 8,
    # the paper's Chinese-CLIP text tower, small and random (the SMALL text sizes)
    "encoder.text_config": "custom",
    "encoder.text_pretrained": None,
}


def paper_small_rice(num_frames: int = 3, **overrides: Any) -> Rice:
    info = DataInfo(num_products=50, num_categories=4, num_frames=num_frames, image_size=112)
    return build_method(Rice, "paper", info, {**PAPER_SMALL, **overrides})


def with_indices(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with the frame indices the DataLoader's collate adds."""
    from benchmark.core.frame_index import frame_indices

    return {**batch, **frame_indices(batch["frame_mask"], batch["box_mask"])}
