"""``video-swin``: Video Swin Transformer clip encoder, InfoNCE to shop images.

Paper: Z. Liu, J. Ning, Y. Cao, Y. Wei, Z. Zhang, S. Lin, H. Hu, "Video Swin Transformer",
CVPR 2022 (arXiv 2106.13230). Official code: SwinTransformer/Video-Swin-Transformer; the
model here is torchvision's port, ``torchvision.models.video.swin3d_b`` /
``SwinTransformer3d``. RICE (ICCV 2023) lists Swin-B (video) among its LPR4M baselines.

Kept from the paper (all of it is torchvision's implementation, used unchanged):
  * 3D patch embedding (2 x 4 x 4 tubelets), four stages of shifted 3D-window attention
    (window 8 x 7 x 7, shifted every second block, relative position bias), patch merging
    between stages, final LayerNorm and global average pooling over (T, H, W);
  * ``paper``: Swin-B (embed 128, depths 2-2-18-2, heads 4-8-16-32, stochastic depth 0.1,
    ~88M parameters) with torchvision's Kinetics-400 weights, by default
    ``KINETICS400_IMAGENET22K_V1`` (the paper's ImageNet-21k-initialised Swin-B, its best
    Kinetics-400 model; ``KINETICS400_V1`` is the ImageNet-1k one); frames are re-normalised
    from the batch's CLIP statistics to the ImageNet mean/std those weights expect.
    ``pretrained`` may instead name a local file (``--pretrained PATH``) holding torchvision's
    state dict or this method's own.

Adaptations to video-to-shop retrieval (same objective as ``clip-meanpool``):
  * the Kinetics classifier is removed; the pooled feature goes through a new linear
    projection to an embedding (512-d on paper, 128-d on tiny); video and image embeddings
    are L2-normalised and trained with symmetric InfoNCE with a learnable logit scale
    (``methods.losses.info_nce``, CLIP's init 1/0.07, clamp at 100);
  * image side: the *same* network on the image repeated over one temporal patch (2 frames),
    i.e. a static clip of exactly one temporal token, the usual way a video Swin or an
    inflated 3D network sees an image; one shared encoder mirrors RICE's and clip-meanpool's
    shared image/frame encoder;
  * clip length: the protocol's (10 frames on paper, the tiny profile's ``num_frames`` on
    tiny) instead of the paper's 32; with tubelet depth 2, 10 frames give 5 temporal tokens
    and torchvision shrinks the temporal window to fit, as it does for any short input;
  * padded frames (``frame_mask`` False) cannot be masked inside windowed attention, so a
    short clip is filled by repeating its real frames cyclically (frame i := real frame
    i mod k) before encoding, as video models loop short clips; a clip with no frame at all
    gets a zero embedding.

``tiny`` (2-core CPU, trained from scratch because no weights can be had offline): the same
``SwinTransformer3d`` class at embed 48, depths 1-1-2-1, heads 2-4-8-16, window 8 x 7 x 7, at
112 px (28 x 28 patches, the paper's 56 x 56 halved as the image is), CLIP normalisation kept.

``tiny`` trains without stochastic depth (``drop_path=0``; ``paper`` keeps Swin-B's 0.1): with
0.1 this 5-block model underfit, not above its untrained control on movingfashion-synth, and a
convolutional tubelet stem (:class:`TubeletConvStem`, ``--set stem=conv``), two blocks per
stage, a doubled learning rate and 8 px patches did not change that (the runs:
``docs/baselines.md``, Video Swin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.video import Swin3D_B_Weights
from torchvision.models.video.swin_transformer import SwinTransformer3d

from benchmark.core.registry import METHODS
from methods.backbones import is_local_weights
from methods.base import DataInfo, Encoded, Method, check_image_size
from methods.encoders import STEMS, ConvStem, read_state_dict
from methods.encoders import EncoderLoadError as WeightsError
from methods.losses import info_nce
from methods.timesformer import renormalise

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VideoSwinConfig:
    image_size: int = 224
    patch_size: tuple[int, int, int] = (2, 4, 4)
    embed: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    heads: tuple[int, ...] = (4, 8, 16, 32)
    window: tuple[int, int, int] = (8, 7, 7)
    drop_path: float = 0.1
    embed_dim: int = 512
    stem: str = "patchify"  # "patchify": the paper's tubelet conv | "conv": TubeletConvStem (measured, not kept)
    # a torchvision Swin3D_B_Weights member name or a local state dict file;
    # None / "none" = random init, asked for explicitly (never a silent fallback)
    pretrained: Optional[str] = "KINETICS400_IMAGENET22K_V1"
    input_mean: Optional[tuple[float, float, float]] = IMAGENET_MEAN  # None keeps CLIP's
    input_std: Optional[tuple[float, float, float]] = IMAGENET_STD
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = 100.0


PAPER = VideoSwinConfig()
TINY = VideoSwinConfig(
    image_size=112,
    embed=48,
    depths=(1, 1, 2, 1),
    heads=(2, 4, 8, 16),
    embed_dim=128,
    drop_path=0.0,  # stochastic depth off: with it this 5-block model does not learn in 216 steps (measured, docstring)
    pretrained=None,
    input_mean=None,
    input_std=None,
)

SWIN_B = dict(embed=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), window=(8, 7, 7), patch_size=(2, 4, 4))


class TubeletConvStem(nn.Module):
    """A convolutional tubelet embedding: :class:`ConvStem` on every frame (the spatial stride),
    then a conv over ``patch[0]`` consecutive frames (the temporal stride). It maps
    [B, 3, T, H, W] to [B, C, T / pt, H / ph, W / pw], the shape of the patchify ``Conv3d`` it
    replaces in torchvision's ``PatchEmbed3d`` (which pads T, H, W to multiples first)."""

    def __init__(self, width: int, patch: tuple[int, int, int]) -> None:
        super().__init__()
        pt, ph, pw = patch
        if ph != pw:
            raise ValueError(f"video-swin: the conv stem needs a square spatial patch, got {patch}")
        self.spatial = ConvStem(width, ph)
        self.temporal = nn.Conv3d(width, width, (pt, 1, 1), (pt, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.spatial(x.transpose(1, 2).reshape(b * t, c, h, w))
        y = y.reshape(b, t, *y.shape[1:]).transpose(1, 2)  # [B, C, T, H', W']
        return self.temporal(y)


def build_swin3d(cfg: VideoSwinConfig) -> nn.Module:
    """torchvision ``SwinTransformer3d`` of ``cfg``'s sizes, with torchvision's weights or a local file."""

    if cfg.stem not in STEMS:
        raise ValueError(f"video-swin: stem {cfg.stem!r} is not one of {', '.join(STEMS)}")
    model = SwinTransformer3d(
        patch_size=list(cfg.patch_size),
        embed_dim=cfg.embed,
        depths=list(cfg.depths),
        num_heads=list(cfg.heads),
        window_size=list(cfg.window),
        stochastic_depth_prob=cfg.drop_path,
    )
    if cfg.stem == "conv":
        model.patch_embed.proj = TubeletConvStem(cfg.embed, cfg.patch_size)
    spec = cfg.pretrained
    if spec is None or spec.strip().lower() in ("", "none", "random"):
        pass
    elif is_local_weights(spec):
        _load_state(model, _read_local(Path(spec)), spec)
    else:
        if any(getattr(cfg, k) != v for k, v in SWIN_B.items()) or cfg.stem != "patchify":
            raise WeightsError(
                f"video-swin: torchvision weights {cfg.pretrained!r} exist for the Swin-B sizes with the patchify stem only"
            )
        try:
            weights = Swin3D_B_Weights[cfg.pretrained]
        except KeyError:
            raise WeightsError(
                f"video-swin: unknown Swin3D_B_Weights {cfg.pretrained!r}; known: {[w.name for w in Swin3D_B_Weights]}"
            ) from None
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise WeightsError(
                f"video-swin: cannot load torchvision weights {cfg.pretrained!r}: {exc}. Pass "
                "--pretrained PATH (a saved swin3d_b state dict), run where download.pytorch.org is reachable, "
                "or ask for random init explicitly with --set pretrained=none"
            ) from exc
        _load_state(model, state, f"torchvision:{cfg.pretrained}")
    model.head = nn.Identity()
    return model


def _read_local(path: Path) -> dict:
    return read_state_dict(path, "video-swin", ("state_dict",), strip_prefix="encoder.")


def _load_state(model: nn.Module, state: dict, source: str) -> None:
    """Load everything but the Kinetics classifier; any other mismatch is an error."""
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"video-swin weights {source}: {exc}") from exc
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise WeightsError(f"video-swin weights {source}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def fill_padding(frames: Tensor, mask: Tensor) -> Tensor:
    """Replace padded frames by the clip's real frames repeated cyclically (real ones first).

    ``frames`` [B, T, ...], ``mask`` [B, T] with the real frames at the front (the batch
    format's padding); a row with no real frame is returned unchanged.
    """
    t = frames.shape[1]
    k = mask.sum(1).clamp_min(1)  # [B]
    pos = torch.arange(t, device=frames.device)[None] % k[:, None]  # [B, T]
    index = pos.view(*pos.shape, *([1] * (frames.ndim - 2))).expand_as(frames)
    return frames.gather(1, index)


@METHODS.register(
    "video-swin",
    description="Video Swin Transformer (torchvision swin3d) clip encoder, shared with a static image clip, InfoNCE",
)
class VideoSwin(Method):
    """Video Swin-B clip encoder; shop images as static 2-frame clips; symmetric InfoNCE."""

    Config = VideoSwinConfig
    PROFILES = {"paper": PAPER, "tiny": TINY}
    encoder_prefixes = ("encoder.",)

    def __init__(self, cfg: VideoSwinConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        check_image_size("video-swin", cfg.image_size, info)
        self.encoder = build_swin3d(cfg)
        self.proj = nn.Linear(cfg.embed * 2 ** (len(cfg.depths) - 1), cfg.embed_dim)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    def _encode(self, clips: Tensor) -> Tensor:
        """``clips`` [B, T, 3, H, W] -> L2-normalised embeddings [B, E]."""
        x = renormalise(clips, self.cfg.input_mean, self.cfg.input_std)
        feat = self.encoder(x.transpose(1, 2))  # torchvision wants [B, C, T, H, W]
        return F.normalize(self.proj(feat), dim=-1)

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        mask = batch["frame_mask"]
        emb = self._encode(fill_padding(batch["frames"], mask))
        return Encoded(emb * mask.any(1, keepdim=True).to(emb.dtype))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        image = batch["image"]
        static = image[:, None].expand(-1, self.cfg.patch_size[0], -1, -1, -1)
        return Encoded(self._encode(static))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        video = self.encode_query(batch).embedding
        image = self.encode_gallery(batch).embedding
        return {"infonce": info_nce(video, image, self.logit_scale, self.cfg.max_logit_scale)}
