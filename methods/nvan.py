"""``nvan``: Non-local Video Attention Network (and STE-NVAN) for video-to-shop retrieval.

Paper: C.-T. Liu, C.-W. Wu, Y.-C. F. Wang, S.-Y. Chien, "Spatially and Temporally Efficient
Non-local Attention Network for Video-based Person Re-Identification", BMVC 2019
(arXiv 1908.01683). Official code: https://github.com/jackie840129/STE-NVAN (``net/resnet.py``,
``net/models.py``, ``train_NL.py``, ``run_NL.sh``).

Kept from the paper and the official code:
  * ResNet-50 (ImageNet init, torchvision weights) with last stride 1 (2048 x 16 x 8 maps at
    the paper's 256 x 128 input; 2048 x 14 x 14 at our 224 x 224);
  * NVAN: embedded-Gaussian non-local blocks over the whole T x H x W volume of a clip, after
    the last 2 bottlenecks of layer2 and the last 3 of layer3 (``--non_layers 0 2 3 0``),
    C/2 inner channels, zero-initialised BatchNorm on the output (``nonlocal_blocks``);
  * STE-NVAN (``ste=True``, the code's ``resnet50_NL_stripe_hr``): stripe non-local blocks
    (16 stripes, mean-pooled) at the same places, operating within pairs of frames, and a
    max-pool over each pair of frames after layer2 and after layer3 (T: 8 -> 4 -> 2);
  * 3D average pooling to one 2048-d vector, BNNeck (frozen shift), bias-free ID classifier
    initialised N(0, 0.001); loss = batch-hard soft-margin triplet on the pre-BN feature +
    ID cross-entropy on the BNNeck feature, equal weights; the BNNeck feature is the test
    embedding;
  * 8 frames per clip by the official chunking (``util/utils.py``, ``frame_chunks="ste-nvan"``):
    chunks of ceil(F / 8) real frames, padded with the last frame (10 frames -> ``[0, 2, 4, 6,
    8, 9, 9, 9]`` at test), one random frame per chunk in training, the first at test
    (``methods.frames``);
  * Adam-like optimisation at lr 1e-4, weight decay 5e-5 in the ``paper`` profile (the
    official run script); the benchmark engine uses AdamW with warmup + cosine instead of
    Adam with a step schedule. The official batch is 8 identities x 4 tracklets = 32 clips;
    at 224 px a clip's layer2 volume has 8 x 28 x 28 positions (a 6272^2 attention map), so
    on one GPU run the benchmark's 256-pair batch with ``--grad-accum`` (e.g. 8).

Adaptations to video-to-shop retrieval:
  * Identities are products (``batch["product"]``, ``DataInfo.num_products`` classes). A shop
    image is a product's one-frame "tracklet": it goes through the *same* network (shared
    weights) as a clip with T = 1, so the non-local blocks attend over its H x W positions
    only and the pair max-pool leaves it unchanged. Sharing is what re-id does for query and
    gallery tracklets, and it puts frames and shop images in one embedding space that the ID
    classifier and the triplet loss shape together. In ``tiny`` the two sides share every
    weight but keep their own BatchNorm statistics (below).
  * Each training batch holds B (clip, shop image) pairs; the ID loss and the batch-hard
    triplet run over all 2B embeddings with product labels, so every anchor's positive is its
    counterpart in the other domain (the batches are not P x K identity-sampled as in re-id).
  * Square 224 px inputs instead of 256 x 128 pedestrians: the layer2/layer3 maps have 28/14
    rows, which 16 stripes do not divide; stripes then follow adaptive-pooling bins (some rows
    shared by two stripes, each row receiving the mean response of its stripes), which equals
    the official partition whenever the stripe count divides the height.

``tiny`` profile (2-core CPU): a randomly initialised ResNet-18 layout at half width
(BasicBlocks, stages 32/64/128/256) with last stride 1 at 112 px, non-local blocks after the
last block of layer2 and of layer3 (the same half of each stage as 2-of-4 and 3-of-6), 8 stripes
for the 14/7-row maps, and 4 frames per clip (STE's two pair-pools take 4 -> 2 -> 1), chunked by
the official rule as in ``paper``.

BatchNorm statistics (tiny, ``domain_batchnorm=True``): clips and shop images (one-frame clips)
pass through the network in two calls, since the non-local blocks and STE's temporal pools see
a clip's frames together and a shop image has one. With one shared BatchNorm, training would
normalise each side by its own batch's statistics and testing both by the running statistics, a
blend of the two, which cost retrieval when measured (``docs/baselines.md``). The tiny profile
therefore keeps one set of running statistics per side in the trunk and the non-local blocks
(shared affine weights, ``methods.domain_norm``, as ``asymnet``); the BNNeck, which training
runs on both sides at once, stays shared. The ``paper`` profile keeps one shared network
(ImageNet BatchNorm statistics to start from; ``--set domain_batchnorm=true`` turns it on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneConfig,
    create_backbone,
    resnet_out_channels,
    resnet_stages,
    resnet_stem,
    set_last_stride,
)
from methods.base import DataInfo, Encoded, Method
from methods.domain_norm import FRAME, SHOP, SIDES, batchnorm_domain, convert_domain_batchnorm
from methods.frames import select_frames
from methods.losses import batch_hard_triplet
from methods.nonlocal_blocks import (
    BNNeck,
    NonLocalBlock,
    StripeNonLocalBlock,
    frames_to_volume,
    id_classifier,
    volume_to_frames,
)


@dataclass(frozen=True)
class NVANConfig:
    encoder: BackboneConfig = field(default_factory=BackboneConfig)
    last_stride: int = 1
    nl_layer2: int = 2  # non-local blocks after the last N blocks of layer2
    nl_layer3: int = 3  # ... and of layer3
    ste: bool = False  # STE-NVAN: stripe non-local within frame pairs + pair max-pooling
    stripes: int = 16
    num_frames: int = 8
    # chunking of the real frames into num_frames (``methods.frames``): "ste-nvan" = STE-NVAN's
    # util/utils.py rule (both profiles); "equal" = methods.frames' other rule
    frame_chunks: str = "ste-nvan"
    triplet_margin: Optional[float] = None  # None: soft margin log(1 + exp(d_ap - d_an))
    triplet_weight: float = 1.0
    id_weight: float = 1.0
    # one set of BatchNorm statistics per side (clip frames, shop images) in the trunk and the
    # non-local blocks (``methods.domain_norm``); the BNNeck stays shared (see the docstring)
    domain_batchnorm: bool = False


PAPER = NVANConfig(
    encoder=BackboneConfig(name="resnet50", pretrained="tv_in1k", input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
)
TINY = NVANConfig(
    encoder=BackboneConfig(name="resnet18", pretrained=None, channels=(32, 64, 128, 256)),
    nl_layer2=1,
    nl_layer3=1,
    stripes=8,
    num_frames=4,
    domain_batchnorm=True,
)


def temporal_pair_maxpool(x: Tensor, t: int) -> tuple[Tensor, int]:
    """[N*t, C, H, W] -> max over consecutive frame pairs, [N*ceil(t/2), ...]; t=1 unchanged."""
    if t < 2:
        return x, t
    nt, c, h, w = x.shape
    v = x.view(nt // t, t, c, h, w)
    if t % 2:
        v = torch.cat([v, v[:, -1:]], dim=1)
    v = v.view(v.shape[0], -1, 2, c, h, w).amax(2)
    return v.reshape(-1, c, h, w), v.shape[1]


@METHODS.register(
    "nvan", description="NVAN / STE-NVAN (BMVC 2019): ResNet-50 + non-local video attention, BNNeck, triplet + ID"
)
class NVAN(Method):
    """ResNet-50 with non-local blocks over T x H x W, 3D average pool, BNNeck."""

    Config = NVANConfig
    # the paper profile's optimiser settings from the paper (see above); --lr-encoder etc. override them
    TRAIN_RECIPE = {"paper": {"lr_encoder": 1e-4, "lr_new": 1e-4, "weight_decay": 5e-5}}
    PROFILES = {"paper": PAPER, "tiny": TINY}

    def __init__(self, cfg: NVANConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        if cfg.ste and cfg.num_frames % 4:
            raise ValueError(
                f"nvan: STE pools frame pairs twice; num_frames must be a multiple of 4, got {cfg.num_frames}"
            )
        self.encoder = create_backbone(cfg.encoder)
        set_last_stride(self.encoder, cfg.last_stride)
        stages = resnet_stages(self.encoder)
        self.nl_at: dict[int, list[int]] = {}
        blocks: dict[str, nn.ModuleList] = {}
        for stage, count in ((1, cfg.nl_layer2), (2, cfg.nl_layer3)):
            n_blocks = len(stages[stage])
            if not 0 <= count <= n_blocks:
                raise ValueError(f"nvan: layer{stage + 1} has {n_blocks} blocks, cannot add {count} non-local blocks")
            self.nl_at[stage] = list(range(n_blocks - count, n_blocks))
            channels = _block_out_channels(stages[stage][-1])
            blocks[str(stage)] = nn.ModuleList(
                StripeNonLocalBlock(channels, cfg.stripes) if cfg.ste else NonLocalBlock(channels) for _ in range(count)
            )
        self.nonlocal_blocks = nn.ModuleDict(blocks)
        dim = resnet_out_channels(self.encoder)
        self.embed_dim = dim
        self.bnneck = BNNeck(dim)
        self.classifier = id_classifier(dim, info.num_products)
        if cfg.domain_batchnorm:
            convert_domain_batchnorm(self, SIDES, exclude=(self.bnneck,))

    def variant(self) -> str:
        return "ste" if self.cfg.ste else ""

    # --- network ---------------------------------------------------------------------
    def features(self, clips: Tensor) -> Tensor:
        """[N, T, 3, H, W] -> pre-BN clip features [N, D] (3D average pool)."""
        n, t = clips.shape[:2]
        x = resnet_stem(self.encoder, clips.flatten(0, 1))
        for s, stage in enumerate(resnet_stages(self.encoder)):
            at = self.nl_at.get(s, [])
            for b, block in enumerate(stage):
                x = block(x)
                if b in at:
                    x = self._nonlocal(self.nonlocal_blocks[str(s)][at.index(b)], x, t)
            if self.cfg.ste and s in (1, 2):
                x, t = temporal_pair_maxpool(x, t)
        return x.view(n, t, *x.shape[1:]).mean(dim=(1, 3, 4))

    def _nonlocal(self, block: nn.Module, x: Tensor, t: int) -> Tensor:
        group = min(2, t) if self.cfg.ste else t
        if self.cfg.ste and t % group:
            raise ValueError(f"nvan: STE needs an even number of frames at every stage, got {t}")
        return volume_to_frames(block(frames_to_volume(x, group)))

    def _clip_features(self, batch: dict[str, Any]) -> Tensor:
        frames, _ = select_frames(
            batch["frames"], batch["frame_mask"], self.cfg.num_frames, self.training, rule=self.cfg.frame_chunks
        )
        with batchnorm_domain(self, FRAME):
            return self.features(frames)

    def _image_features(self, batch: dict[str, Any]) -> Tensor:
        with batchnorm_domain(self, SHOP):
            return self.features(batch["image"].unsqueeze(1))

    # --- contract --------------------------------------------------------------------
    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.bnneck(self._clip_features(batch)))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.bnneck(self._image_features(batch)))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        feats = torch.cat([self._clip_features(batch), self._image_features(batch)])
        labels = torch.cat([batch["product"], batch["product"]])
        logits = self.classifier(self.bnneck(feats))
        return {
            "triplet": self.cfg.triplet_weight * batch_hard_triplet(feats, labels, margin=self.cfg.triplet_margin),
            "id": self.cfg.id_weight * nn.functional.cross_entropy(logits, labels),
        }


def _block_out_channels(block: nn.Module) -> int:
    """Width of a residual block: its last convolution outside the shortcut."""
    main = [m for name, m in block.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in name]
    return int(main[-1].out_channels)
