"""``clip-meanpool``: one CLIP ViT for frames and shop images, frames mean-pooled, InfoNCE.

This is CLIP4Clip's parameter-free "meanP" similarity (Luo et al., "CLIP4Clip: An Empirical
Study of CLIP for End to End Video Clip Retrieval", Neurocomputing 2022 / arXiv 2104.08860)
applied to video-to-shop retrieval, which is exactly the instance-level contrastive learning
(ICL) branch of RICE taken alone (Yang et al., "Cross-view Semantic Alignment for
Livestreaming Product Recognition", ICCV 2023; the "ICL" row of its ablation).

Kept from the papers and RICE's official code:
  * one shared open_clip ViT encodes livestream frames and shop images; a frame's (and an
    image's) global embedding is CLS -> ``ln_post`` -> projection;
  * the video embedding is the masked mean of the L2-normalised frame embeddings over the
    real (unpadded) frames, L2-normalised again (``methods.encoders.video_embedding``);
  * symmetric InfoNCE between video and image embeddings with CLIP's learnable logit scale
    (clamped at 100), negatives gathered from every process (``methods.losses.info_nce``);
  * retrieval by cosine similarity, no second stage.

Profiles:
  * ``paper``: ViT-B/32 at 224 px initialised from OpenAI CLIP (``openai`` hub tag, or a
    local checkpoint through ``--pretrained PATH``), built with QuickGELU as those weights
    were trained (``methods.encoders``), with the benchmark's paper profile
    (encoder lr 1e-6 ... see ``benchmark.core.config``).
  * ``tiny`` (scaled down for a 2-core CPU): a 4-layer, width-192 ViT with patch 16 at 112 px
    (the same 7x7 patch grid as ViT-B/32 at 224 px), randomly initialised because no
    pretrained weights can be had offline; it therefore learns the synthetic data from
    scratch and its numbers are not comparable with CLIP-initialised ones. Its patch
    embedding is a convolutional stem (``methods.encoders.ConvStem``, Xiao et al., NeurIPS
    2021) instead of CLIP's single patchify conv: from random weights the patchify ViT hardly
    learns in the tiny budget (the runs: ``docs/baselines.md``, CLIP mean-pool). The stem is
    the only departure from CLIP's architecture; ``--set encoder.stem=patchify`` restores the
    plain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from benchmark.core.registry import METHODS
from methods.base import DataInfo, Encoded, Method, check_image_size
from methods.encoders import PAPER_ENCODER, TINY_ENCODER, ClipEncoder, EncoderConfig, video_embedding
from methods.losses import info_nce


@dataclass(frozen=True)
class ClipMeanPoolConfig:
    encoder: EncoderConfig = PAPER_ENCODER
    max_logit_scale: float = 100.0  # CLIP clamps exp(logit_scale) at 100


@METHODS.register(
    "clip-meanpool", description="CLIP ViT, frames mean-pooled, symmetric InfoNCE (CLIP4Clip meanP = RICE's ICL alone)"
)
class ClipMeanPool(Method):
    """CLIP4Clip meanP / RICE ICL: shared ViT, mean-pooled frames, symmetric InfoNCE."""

    Config = ClipMeanPoolConfig
    PROFILES = {"paper": ClipMeanPoolConfig(encoder=PAPER_ENCODER), "tiny": ClipMeanPoolConfig(encoder=TINY_ENCODER)}

    def __init__(self, cfg: ClipMeanPoolConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        check_image_size("clip-meanpool", cfg.encoder.image_size, info)
        self.encoder = ClipEncoder(cfg.encoder)

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        frame_emb, _ = self.encoder.encode_frames(batch["frames"])
        return Encoded(video_embedding(frame_emb, batch["frame_mask"]))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        emb, _ = self.encoder.encode_images(batch["image"])
        return Encoded(F.normalize(emb, dim=-1))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        video = self.encode_query(batch).embedding
        image = self.encode_gallery(batch).embedding
        return {"icl": info_nce(video, image, self.encoder.logit_scale, self.cfg.max_logit_scale)}
