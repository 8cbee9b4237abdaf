"""``timesformer``: TimeSformer (divided space-time attention) video encoder, InfoNCE to shop images.

Paper: G. Bertasius, H. Wang, L. Torresani, "Is Space-Time Attention All You Need for Video
Understanding?", ICML 2021 (arXiv 2102.05095). Official code: facebookresearch/TimeSformer
(``timesformer/models/vit.py``, ``helpers.py``). RICE (ICCV 2023) lists TimeSformer among its
video baselines for LPR4M; this module is that baseline inside the benchmark's protocol.

Kept from the paper and the official code (built on timm's ``Attention``/``Mlp``/``DropPath``):
  * per-frame patch embedding (conv, patch 16; ``tiny`` swaps in a conv stem, see below), one
    CLS token, a spatial position embedding shared by all frames and a learned time embedding
    (zero-initialised) added per frame;
    tokens ordered space-major, time-minor, as in the official ``(b n) t m -> b (n t) m``;
  * divided space-time blocks: temporal attention over the T tokens of each patch position
    -> ``temporal_fc`` (zero-initialised in every block but the first) -> residual; then spatial
    attention over each frame's patches with a per-frame copy of the CLS token, whose outputs
    are averaged over frames; then the MLP; pre-norm, LayerNorm eps 1e-6, qkv bias,
    stochastic depth rising linearly to 0.1;
  * ``paper``: TimeSformer-Base (width 768, depth 12, 12 heads, patch 16, 224 px, ~121M
    parameters) initialised, as the official recipe does, from timm's original ImageNet-21k
    ViT-B/16 (``vit_base_patch16_224.orig_in21k_ft_in1k``, the official code's
    ``jx_vit_base_p16_224`` file); temporal attention and its norm start as copies of the
    spatial ones; input normalisation mean 0.45 / std 0.225 as in the official configs.
    ``pretrained`` may instead name a local file (``--pretrained PATH``): a timm ViT state
    dict, an official TimeSformer checkpoint (``model.`` prefix, time embedding resized by
    nearest interpolation as the official loader does) or this method's own state dict.
  * a time embedding length different from the clip length is resized by nearest
    interpolation, exactly as the official ``forward_features`` does.

Adaptations to video-to-shop retrieval (no classification head; same objective as
``clip-meanpool``):
  * the CLS output after the final norm goes through a new linear projection to an
    embedding (512-d on paper, as CLIP ViT-B/32's, 128-d on tiny); video and image
    embeddings are L2-normalised and trained with symmetric InfoNCE with a learnable logit
    scale (``methods.losses.info_nce``, CLIP's init 1/0.07 and clamp at 100);
  * image side: the *same* network on a one-frame clip. Temporal attention over a single
    frame is well defined, the time embedding is resized to length 1 by the official nearest
    rule (its first entry), and one shared encoder mirrors RICE's and clip-meanpool's shared
    image/frame encoder, so parameter count and initialisation stay those of TimeSformer;
  * padded frames (``frame_mask`` False) are masked out as keys of the temporal attention and
    left out of the per-frame CLS average, so a short clip is encoded from its real frames
    only; a clip with no frame at all gets a zero embedding;
  * the time embedding is sized to the protocol's clip length (10 frames on paper, the tiny
    profile's ``num_frames`` on tiny) instead of the paper's 8; it is not part of the ImageNet initialisation, so nothing
    pretrained is resized.

``tiny`` (2-core CPU, trained from scratch because no weights can be had offline): width
192, depth 4, 4 heads, patch 16 at 112 px (7x7 patches per frame, the paper's 14x14 grid
scaled like the benchmark's tiny CLIP ViT), 128-d embedding, CLIP normalisation kept, and a
convolutional stem (``methods.encoders.ConvStem``, Xiao et al., NeurIPS 2021; ``stem="conv"``)
in place of the patchify conv, as ``clip-meanpool``'s tiny encoder has: same stride, same 7x7
token grid, everything after it unchanged. ``--set stem=patchify`` restores the paper's embedding.

Why the stem: from random weights a 16 px patchify projection is what a small ViT learns
slowest; with it the tiny model was not above its untrained control on movingfashion-synth,
with the stem it was on both synthetic sets (the runs: ``docs/baselines.md``, TimeSformer).
Pretrained weights (``paper``) make the question moot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention, DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from benchmark.core.config import DataConfig
from benchmark.core.registry import METHODS
from methods.base import DataInfo, Encoded, Method, check_image_size
from methods.encoders import STEMS, ConvStem, read_state_dict
from methods.encoders import EncoderLoadError as WeightsError
from methods.hub import is_local_weights, require_timm_weights
from methods.losses import info_nce

# The batch format normalises pixels with these (``methods/base.py``, ``DataConfig`` defaults).
BATCH_MEAN = DataConfig.mean
BATCH_STD = DataConfig.std


@dataclass(frozen=True)
class TimeSformerConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    embed_dim: int = 512
    stem: str = "patchify"  # "patchify": the paper's patch conv | "conv": methods.encoders.ConvStem (tiny)
    # a timm ViT name (the ImageNet initialisation) or a local state dict file;
    # None / "none" = random init, asked for explicitly (never a silent fallback)
    pretrained: Optional[str] = "vit_base_patch16_224.orig_in21k_ft_in1k"
    # pixel normalisation the network expects; None keeps the batch's CLIP normalisation
    input_mean: Optional[tuple[float, float, float]] = (0.45, 0.45, 0.45)
    input_std: Optional[tuple[float, float, float]] = (0.225, 0.225, 0.225)
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = 100.0


PAPER = TimeSformerConfig()
TINY = TimeSformerConfig(
    image_size=112,
    patch_size=16,
    width=192,
    depth=4,
    heads=4,
    embed_dim=128,
    stem="conv",
    pretrained=None,
    input_mean=None,
    input_std=None,
)


def renormalise(x: Tensor, mean: Optional[tuple], std: Optional[tuple]) -> Tensor:
    """Pixels normalised with the batch's CLIP mean/std -> normalised with ``mean``/``std``."""
    if mean is None or std is None:
        return x
    shape = [1] * (x.ndim - 3) + [3, 1, 1]
    bm, bs = x.new_tensor(BATCH_MEAN).view(shape), x.new_tensor(BATCH_STD).view(shape)
    m, s = x.new_tensor(mean).view(shape), x.new_tensor(std).view(shape)
    return (x * bs + bm - m) / s


class DividedSpaceTimeBlock(nn.Module):
    """One TimeSformer block: temporal attention, spatial attention, MLP (divided ST)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()

        norm = lambda: nn.LayerNorm(dim, eps=1e-6)  # noqa: E731
        self.temporal_norm1 = norm()
        self.temporal_attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = norm()
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm()
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor, t: int, keep: Tensor) -> Tensor:
        """``x`` [B, 1 + N*T, C] (CLS, then patches space-major/time-minor); ``keep`` [B, T]."""
        b, _, c = x.shape
        n = (x.shape[1] - 1) // t
        cls, patches = x[:, :1], x[:, 1:]
        # temporal attention: each patch position attends over its T frames (real ones only)
        xt = patches.reshape(b * n, t, c)
        tmask = keep[:, None, None, None, :].expand(b, n, 1, 1, t).reshape(b * n, 1, 1, t)
        res_t = self.drop_path(self.temporal_attn(self.temporal_norm1(xt), attn_mask=tmask))
        xt = patches + self.temporal_fc(res_t.reshape(b, n * t, c))
        # spatial attention: each frame's patches with a copy of the CLS token
        xs = xt.reshape(b, n, t, c).transpose(1, 2).reshape(b * t, n, c)
        xs = torch.cat([cls.repeat_interleave(t, dim=0), xs], dim=1)
        res_s = self.drop_path(self.attn(self.norm1(xs)))
        w = keep.to(x.dtype)
        cls_res = (res_s[:, 0].reshape(b, t, c) * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)
        res_p = res_s[:, 1:].reshape(b, t, n, c).transpose(1, 2).reshape(b, n * t, c)
        x = torch.cat([cls, xt], dim=1) + torch.cat([cls_res[:, None], res_p], dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Per-frame patch embedding: the paper's patchify conv, or a :class:`ConvStem` of the same stride."""

    def __init__(self, patch: int, dim: int, stem: str = "patchify") -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"timesformer: stem {stem!r} is not one of {', '.join(STEMS)}")
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch) if stem == "patchify" else ConvStem(dim, patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimeSformerEncoder(nn.Module):
    """TimeSformer backbone (divided space-time); returns the normalised CLS feature."""

    def __init__(self, cfg: TimeSformerConfig, num_frames: int) -> None:
        super().__init__()

        self.cfg = cfg
        self.grid = cfg.image_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width, cfg.stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, cfg.width))
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, cfg.width))
        dpr = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear, as torch.linspace
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(cfg.width, cfg.heads, cfg.mlp_ratio, p) for p in dpr)
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)
        for i, blk in enumerate(self.blocks):
            if i > 0:  # the official code zero-initialises temporal_fc in every block but the first
                nn.init.zeros_(blk.temporal_fc.weight)
                nn.init.zeros_(blk.temporal_fc.bias)

    def forward(self, frames: Tensor, keep: Tensor) -> Tensor:
        """``frames`` [B, T, 3, H, W], ``keep`` bool [B, T] (at least one True per row) -> [B, C]."""
        b, t = frames.shape[:2]
        x = self.patch_embed(frames.flatten(0, 1))  # [B*T, N, C]
        n, c = x.shape[1], x.shape[2]
        if n != self.grid**2:
            raise ValueError(f"timesformer: frames give {n} patches, the model is built for {self.grid**2}")
        x = x + self.pos_embed[:, 1:]
        time = self.time_embed
        if t != time.shape[1]:  # the official rule: nearest interpolation of the time embedding
            time = F.interpolate(time.transpose(1, 2), size=t, mode="nearest").transpose(1, 2)
        x = x.reshape(b, t, n, c) + time[:, :, None]
        x = x.transpose(1, 2).reshape(b, n * t, c)  # space-major, time-minor
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x, t, keep)
        return self.norm(x)[:, 0]


def _init_weights(m: nn.Module) -> None:

    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def vit_to_timesformer(state: Mapping[str, Tensor], num_frames: int) -> dict[str, Tensor]:
    """A timm ViT (or official TimeSformer) state dict -> this encoder's keys.

    As the official loader: temporal attention / norm copied from the spatial ones when absent,
    the time embedding resized by nearest interpolation, the classifier dropped.
    """
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        k = k[len("model.") :] if k.startswith("model.") else k
        if k.startswith("head.") or k.startswith("fc_norm."):
            continue
        out[k] = v
    for k in list(out):
        if k.startswith("blocks.") and (".attn." in k or ".norm1." in k):
            tk = k.replace(".attn.", ".temporal_attn.").replace(".norm1.", ".temporal_norm1.")
            out.setdefault(tk, out[k])
    if "time_embed" in out and out["time_embed"].shape[1] != num_frames:
        te = out["time_embed"].transpose(1, 2)
        out["time_embed"] = F.interpolate(te, size=num_frames, mode="nearest").transpose(1, 2)
    return out


def load_encoder_weights(encoder: TimeSformerEncoder, cfg: TimeSformerConfig, num_frames: int) -> str:
    """Initialise from ``cfg.pretrained`` (local file or timm name); returns where the weights came from."""
    spec = cfg.pretrained
    if spec is None or spec.strip().lower() in ("", "none", "random"):
        return "random"
    if is_local_weights(spec):
        path = Path(spec)
        state = read_state_dict(path, "timesformer", ("model_state", "state_dict", "model"), strip_prefix="encoder.")
        source = str(path)
    else:
        if cfg.stem != "patchify":
            raise WeightsError(
                f"timesformer: timm weights {spec!r} are for the patchify embedding, not stem {cfg.stem!r}; "
                "add --set stem=patchify"
            )
        fix = "pass a local ViT-B/16 or TimeSformer state dict (--pretrained PATH) or --set pretrained=none"
        require_timm_weights(spec, f"timesformer: timm weights {spec!r}", fix)
        try:
            vit = timm.create_model(spec, pretrained=True)
        except Exception as exc:
            raise WeightsError(
                f"timesformer: cannot load timm weights {spec!r}: {exc}. Pass a local ViT-B/16 or "
                "TimeSformer state dict (--pretrained PATH), run where the hub is reachable, or ask "
                "for random init explicitly with --set pretrained=none"
            ) from exc
        state = vit.state_dict()
        source = f"timm:{spec}"
    state = vit_to_timesformer(state, num_frames)
    if "pos_embed" in state and state["pos_embed"].shape != encoder.pos_embed.shape:
        raise WeightsError(
            f"timesformer weights {source}: position embedding {tuple(state['pos_embed'].shape)} does not fit "
            f"{tuple(encoder.pos_embed.shape)} (image_size {cfg.image_size}, patch {cfg.patch_size})"
        )
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "time_embed" and "temporal_fc" not in k]
    if missing or unexpected:
        raise WeightsError(f"timesformer weights {source}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return source


@METHODS.register(
    "timesformer",
    description="TimeSformer (divided space-time attention) clip encoder, shared with a 1-frame image clip, InfoNCE",
)
class TimeSformer(Method):
    """TimeSformer-Base video encoder; shop images as 1-frame clips; symmetric InfoNCE."""

    Config = TimeSformerConfig
    PROFILES = {"paper": PAPER, "tiny": TINY}
    encoder_prefixes = ("encoder.",)

    def __init__(self, cfg: TimeSformerConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        check_image_size("timesformer", cfg.image_size, info)
        self.encoder = TimeSformerEncoder(cfg, info.num_frames)
        self.weights_source = load_encoder_weights(self.encoder, cfg, info.num_frames)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim)
        _init_weights(self.proj)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    def _encode(self, frames: Tensor, mask: Tensor) -> Tensor:
        present = mask.any(1)
        keep = mask | ~present[:, None]  # a clip with no frame: attend over padding, zeroed below
        x = renormalise(frames, self.cfg.input_mean, self.cfg.input_std)
        emb = F.normalize(self.proj(self.encoder(x, keep)), dim=-1)
        return emb * present[:, None].to(emb.dtype)

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self._encode(batch["frames"], batch["frame_mask"]))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        image = batch["image"]
        mask = torch.ones(image.shape[0], 1, dtype=torch.bool, device=image.device)
        return Encoded(self._encode(image[:, None], mask))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        video = self.encode_query(batch).embedding
        image = self.encode_gallery(batch).embedding
        return {"infonce": info_nce(video, image, self.logit_scale, self.cfg.max_logit_scale)}
