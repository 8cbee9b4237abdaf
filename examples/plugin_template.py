"""A complete, minimal LPR-Bench method plugin: copy this file, rename the method, change the model.

Run it through the whole protocol without touching the repository::

    python run_benchmark.py --plugin path/to/my_method.py --method example-convpool \\
        --dataset lpr4m-synth --profile tiny

or ship it in a package and advertise it under the ``lpr_benchmark.methods`` entry-point
group (``pyproject.toml``: ``[project.entry-points."lpr_benchmark.methods"]``
``example-convpool = "my_package.my_method"``); the benchmark imports the module, which
registers the method.

What a method must provide (see ``methods/base.py`` for the batch format):

* a frozen config dataclass and one instance per profile (``paper`` and ``tiny``) in
  ``PROFILES``; ``--set key=value`` overrides its fields;
* ``encode_query(batch)`` -> :class:`Encoded` for clips (``frames`` [B, T, 3, H, W] with
  ``frame_mask`` [B, T]) and ``encode_gallery(batch)`` for shop images (``image`` [B, 3, H, W]);
  the evaluator L2-normalises the embeddings and ranks by cosine similarity;
* ``training_losses(batch)`` -> named scalar losses for a batch of (clip, image) pairs; the
  engine sums and minimises them (optimiser, schedule, AMP, DDP are the protocol's, not yours);
* optionally ``encoder_prefixes`` (parameters trained at the encoder learning rate),
  ``supports_rerank`` + ``rerank(query, gallery)`` for a second stage, ``variant()`` for an
  ablation label.

This example: a small convolutional network shared by frames and shop images, frames
mean-pooled over the temporal mask, symmetric InfoNCE with a learnable temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.base import DataInfo, Encoded, Method
from methods.encoders import masked_mean
from methods.losses import info_nce


@dataclass(frozen=True)
class ConvPoolConfig:
    width: int = 32  # channels of the first stage, doubled at each of the 3 stages
    embed_dim: int = 64
    init_temperature: float = 0.07


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@METHODS.register("example-convpool", description="plugin template: small CNN, mean-pooled frames, InfoNCE")
class ConvPool(Method):
    """Plugin template: a shared small CNN, frames mean-pooled, symmetric InfoNCE."""

    Config = ConvPoolConfig
    PROFILES = {"tiny": ConvPoolConfig(), "paper": ConvPoolConfig(width=64, embed_dim=256)}
    encoder_prefixes = ("backbone.",)  # trained at TrainConfig.lr_encoder; the rest at lr_new

    def __init__(self, cfg: ConvPoolConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        w = cfg.width
        self.backbone = nn.Sequential(_stage(3, w), _stage(w, 2 * w), _stage(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1))
        self.proj = nn.Linear(4 * w, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def _embed(self, images: Tensor) -> Tensor:
        return self.proj(self.backbone(images).flatten(1))

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        frames, mask = batch["frames"], batch["frame_mask"]
        real = F.normalize(self._embed(frames[mask]), dim=-1)  # padding frames never enter the CNN
        per_frame = real.new_zeros(*mask.shape, real.shape[-1])
        per_frame[mask] = real
        return Encoded(F.normalize(masked_mean(per_frame, mask), dim=-1))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(F.normalize(self._embed(batch["image"]), dim=-1))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        video = self.encode_query(batch).embedding
        image = self.encode_gallery(batch).embedding
        return {"info_nce": info_nce(video, image, self.logit_scale)}
