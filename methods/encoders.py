"""The shared open_clip encoder: global embeddings, patch tokens, key-padding masks, text.

RICE (and ``clip-meanpool``, the video baselines' image side) use one CLIP ViT for shop
images and livestream frames. Following RICE's official code, a frame's global embedding is
CLS -> ``ln_post`` -> ``proj`` and its patch tokens are the last transformer layer's output
*before* ``ln_post`` (1 + grid**2 tokens, CLS first). An optional boolean ``keep`` mask
[N, 1 + grid**2] turns into an attention mask over keys, as RICE's intent-product mask does.

``paper``: open_clip ``ViT-B-32`` loaded from a hub tag (``openai``) or a local checkpoint
file; failing both is an error, never a silent random start. It is built with QuickGELU
(``quick_gelu=True``), the activation OpenAI's weights were trained with (open_clip's pretrained
config for ``openai`` says so; its plain ``ViT-B-32`` config builds ``nn.GELU`` and only warns); a
hub tag whose config disagrees with ``quick_gelu`` is refused. Pixels are normalised with CLIP's
mean/std (``benchmark.core.config``), as the weights were. ``tiny``: the same open_clip
``CLIP`` class built from a small vision/text config and randomly initialised, with a
convolutional stem (:class:`ConvStem`, Xiao et al. NeurIPS 2021) in place of the patchify conv:
from random weights a patchify ViT barely learns in the tiny budget (the runs:
``docs/baselines.md``, CLIP mean-pool), while the token grid RICE's IPD and PMD work on is
unchanged.

Text (``with_text``): the tower ``EncoderConfig.text_tower`` names (:mod:`methods.text_towers`):
``cn-clip`` (Chinese-CLIP's BERT; the paper and tiny profiles, LPR4M's text being Chinese),
``file`` (precomputed embeddings by clip / image id) or ``openai-clip`` (this CLIP's own,
EOT token -> ``ln_final`` -> proj; its BPE cuts Chinese into bytes: docs/text.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import QuickGELU
from torch import Tensor, nn

from methods.hub import EncoderLoadError, is_local_weights, require_hub_files
from methods.text_tokens import TextTokens, tokenize_texts
from methods.text_towers import TEXT_TOWERS, CnClipText, FileTextEmbeddings, cn_clip_config


@dataclass(frozen=True)
class EncoderConfig:
    model_name: str = "ViT-B-32"  # an open_clip architecture, or "custom" for the fields below
    pretrained: Optional[str] = "openai"  # hub tag or local file; None = random init
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    embed_dim: int = 512
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    context_length: int = 77
    stem: str = "patchify"  # "patchify": CLIP's one patch_size-stride conv | "conv": ConvStem
    # QuickGELU (x * sigmoid(1.702 x)) in every MLP, as OpenAI's CLIP weights were trained with;
    # open_clip's plain "ViT-B-32" config builds nn.GELU and only warns on a mismatch
    quick_gelu: bool = False
    # the text tower (methods.text_towers): "openai-clip" (this CLIP's own, BPE), "cn-clip"
    # (Chinese-CLIP's BERT, config text_config, weights text_pretrained: a cn-clip hub name or a
    # local checkpoint, None = random init) or "file" (precomputed embeddings per clip / image id)
    text_tower: Literal["openai-clip", "cn-clip", "file"] = "openai-clip"
    text_config: Literal["RoBERTa-wwm-ext-base-chinese", "RBT3-chinese", "custom"] = (
        "RoBERTa-wwm-ext-base-chinese"  # cn-clip: a shipped config or "custom"
    )
    text_pretrained: Optional[str] = "ViT-B-16"
    text_context_length: int = 52  # cn-clip's tokenize default
    asr_embeddings: Optional[str] = None  # "file": {clip id: [embed_dim floats]}
    title_embeddings: Optional[str] = None  # "file": {image id: [embed_dim floats]}


STEMS = ("patchify", "conv")

# text: the Chinese-CLIP tokenizer and a small random BERT of the text_* sizes (the OpenAI tower,
# text_tower="openai-clip", has these sizes and a 32-token context)
TINY_ENCODER = EncoderConfig(
    model_name="custom",
    pretrained=None,
    image_size=112,
    patch_size=16,
    width=192,
    layers=4,
    heads=4,
    embed_dim=128,
    text_width=128,
    text_layers=2,
    text_heads=4,
    context_length=32,
    stem="conv",
    text_tower="cn-clip",
    text_config="custom",
    text_pretrained=None,
)
# OpenAI's ViT-B/32 (hub tag or the official ViT-B-32.pt); text: Chinese-CLIP ViT-B-16's RoBERTa tower
PAPER_ENCODER = EncoderConfig(quick_gelu=True, text_tower="cn-clip")


class ConvStem(nn.Module):
    """A convolutional patch embedding (Xiao et al., "Early Convolutions Help Transformers See
    Better", NeurIPS 2021): 3x3 stride-2 conv-BN-ReLU layers, channels doubling up to ``width``,
    then a last conv that takes the rest of the stride (1x1 when ``patch`` is a power of 2). It
    maps [N, 3, H, W] to [N, width, H / patch, W / patch], the shape of the patchify conv it
    replaces, so the token grid and everything after it are unchanged. Its BatchNorm (as in the
    paper) uses the micro-batch's statistics in training: a global batch split over processes
    (without SyncBatchNorm) or accumulation steps trains slightly differently from one batch.
    """

    def __init__(self, width: int, patch: int, max_halvings: int = 4) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"ConvStem: patch size must be positive, got {patch}")
        halvings = 0
        while patch % 2 == 0 and halvings < max_halvings:
            patch //= 2
            halvings += 1
        layers: list[nn.Module] = []
        c_in = 3
        for k in range(halvings):
            c_out = max(8, width >> (halvings - 1 - k))
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, width, patch, patch))
        self.layers = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def build_clip(cfg: EncoderConfig) -> nn.Module:
    """An ``open_clip.CLIP`` model: from a registered architecture or a small custom config.

    With ``stem="conv"`` the vision tower's patchify conv (``visual.conv1``) is replaced by a
    :class:`ConvStem` before any weights are loaded.
    """
    if cfg.stem not in STEMS:
        raise ValueError(f"encoder stem {cfg.stem!r} is not one of {', '.join(STEMS)}")
    if cfg.model_name == "custom":
        return _custom_clip(cfg)
    if cfg.stem == "conv":
        raise ValueError(
            f"encoder stem 'conv' needs model_name 'custom' (a randomly initialised or local-file "
            f"model); {cfg.model_name}'s pretrained weights are for its patchify stem"
        )

    declared = weights_quick_gelu(cfg.model_name, cfg.pretrained)
    if declared is not None and declared != cfg.quick_gelu:
        raise EncoderLoadError(
            f"open_clip {cfg.model_name} weights {cfg.pretrained!r} were trained with "
            f"{'QuickGELU' if declared else 'GELU'}; set encoder.quick_gelu={str(declared).lower()}"
        )
    if cfg.pretrained is None:
        model = open_clip.create_model(cfg.model_name, pretrained=None, force_quick_gelu=cfg.quick_gelu)
    else:
        _check_weights_source(cfg.model_name, cfg.pretrained)
        try:
            model = open_clip.create_model(cfg.model_name, pretrained=cfg.pretrained, force_quick_gelu=cfg.quick_gelu)
        except Exception as exc:  # network failure, unknown tag, unreadable file
            raise EncoderLoadError(
                f"cannot load open_clip {cfg.model_name} weights {cfg.pretrained!r}: {exc}. "
                "Pass --pretrained PATH to a local checkpoint (e.g. a downloaded "
                "open_clip_pytorch_model.bin), or run where the hub is reachable."
            ) from exc
    if uses_quick_gelu(model) != cfg.quick_gelu:
        raise EncoderLoadError(
            f"open_clip {cfg.model_name}: built with {'QuickGELU' if uses_quick_gelu(model) else 'GELU'} "
            f"but encoder.quick_gelu={cfg.quick_gelu} (the architecture name fixes it: e.g. '-quickgelu')"
        )
    return model


def _check_weights_source(model_name: str, pretrained: str) -> None:
    """One line, before open_clip is asked: a local file that is not there, a name that is
    neither a file nor one of the architecture's tags, or hub weights neither cached nor
    reachable (open_clip would retry for about a minute, then wrap the error)."""
    import open_clip  # noqa: PLC0415  heavy, as in build_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME  # noqa: PLC0415  as above

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        if not Path(pretrained).is_file():
            known = (
                f"; open_clip tags of {model_name}: {', '.join(tags[:4])}..."
                if not is_local_weights(pretrained)
                else ""
            )
            raise EncoderLoadError(f"encoder weights {pretrained}: no such file{known}")
        return
    hub = (open_clip.get_pretrained_cfg(model_name, pretrained) or {}).get("hf_hub", "")
    repo_id, filename = os.path.split(hub)  # open_clip's rule: "org/name/" = the default file names
    if repo_id:
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]  # the order it tries
        require_hub_files(
            repo_id,
            names,
            f"open_clip {model_name} weights {pretrained!r}",
            f"download {names[-1]} from huggingface.co/{repo_id} and pass --pretrained PATH",
        )


def weights_quick_gelu(model_name: str, pretrained: Optional[str]) -> Optional[bool]:
    """Whether open_clip's own pretrained config for ``model_name``/``pretrained`` (a hub tag)
    says the weights were trained with QuickGELU; None for a local file or no weights."""
    if not pretrained:
        return None

    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    return bool(tag_cfg.get("quick_gelu", False)) if tag_cfg else None


def uses_quick_gelu(model: nn.Module) -> bool:
    """Whether any MLP of ``model`` uses open_clip's QuickGELU activation."""

    return any(isinstance(m, QuickGELU) for m in model.modules())


def _custom_clip(cfg: EncoderConfig) -> nn.Module:
    """The small custom config: stem swapped first, then the local weights (if any) loaded."""

    model = CLIP(**_custom_kwargs(cfg, CLIPVisionCfg, CLIPTextCfg))
    if cfg.stem == "conv":
        model.visual.conv1 = ConvStem(cfg.width, cfg.patch_size)
    if cfg.pretrained:
        load_local_weights(model, Path(cfg.pretrained))
    return model


def _custom_kwargs(cfg: EncoderConfig, vision_cls, text_cls) -> dict:
    extra = {"quick_gelu": True} if cfg.quick_gelu else {}  # absent = open_clip's default (GELU)
    return dict(
        **extra,
        embed_dim=cfg.embed_dim,
        vision_cfg=vision_cls(
            layers=cfg.layers,
            width=cfg.width,
            head_width=cfg.width // cfg.heads,
            patch_size=cfg.patch_size,
            image_size=cfg.image_size,
        ),
        text_cfg=text_cls(
            context_length=cfg.context_length, width=cfg.text_width, heads=cfg.text_heads, layers=cfg.text_layers
        ),
    )


def read_state_dict(
    path: Path,
    owner: str = "encoder",
    wrappers: tuple[str, ...] = ("model_state_dict", "state_dict", "model_state", "model"),
    strip_prefix: str | None = None,
) -> dict:
    """A tensor state dict from a local ``torch.save`` file (``weights_only=True``).

    Unwraps the first of ``wrappers`` that holds a dict (training checkpoints nest the model
    there); with ``strip_prefix``, a state dict of one of this project's methods is reduced to
    that sub-module (``encoder.``). Errors name ``owner`` and the file.
    """
    if not path.is_file():
        raise EncoderLoadError(f"{owner} weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderLoadError(f"{owner} weights {path}: not a loadable tensor checkpoint ({first})") from exc
    for key in wrappers:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise EncoderLoadError(f"{owner} weights {path}: not a state dict")
    if strip_prefix and any(k.startswith(strip_prefix) for k in state):
        state = {k[len(strip_prefix) :]: v for k, v in state.items() if k.startswith(strip_prefix)}
    return state


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a local state dict into ``model``; missing keys are an error naming the file."""
    state = read_state_dict(path, wrappers=("state_dict",))
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise EncoderLoadError(f"encoder weights {path}: missing keys {missing[:5]}...")


def build_text_tower(cfg: EncoderConfig) -> Optional[nn.Module]:
    """The profile's text tower when it is not this CLIP's own (``cn-clip`` or ``file``)."""
    if cfg.text_tower not in TEXT_TOWERS:
        raise ValueError(f"encoder text_tower {cfg.text_tower!r} is not one of {', '.join(TEXT_TOWERS)}")
    if cfg.text_tower == "file":
        return FileTextEmbeddings(cfg.asr_embeddings, cfg.title_embeddings, cfg.embed_dim)
    if cfg.text_tower == "cn-clip":
        config = cn_clip_config(cfg.text_config, cfg.text_width, cfg.text_layers, cfg.text_heads)
        tower = CnClipText(config, cfg.embed_dim, cfg.text_context_length)
        if cfg.text_pretrained:
            tower.load(cfg.text_pretrained, cfg.text_config)
        return tower
    return None


def refuse_random_text(cfg: EncoderConfig, owner: str) -> None:
    """A paper profile's Chinese-CLIP text tower needs its weights: one clear error when unset."""
    if cfg.text_tower == "cn-clip" and not cfg.text_pretrained:
        raise ValueError(
            f"{owner} (paper profile): the Chinese-CLIP text tower needs weights; set encoder.text_pretrained to a "
            f"cn-clip hub name (ViT-B-16) or a local cn-clip checkpoint, or encoder.text_tower=file with "
            f"encoder.asr_embeddings / encoder.title_embeddings"
        )


class ClipEncoder(nn.Module):
    """One open_clip model shared by shop images and frames (and, optionally, text).

    ``with_text`` builds the profile's text tower (``cfg.text_tower``); ``clip_text`` keeps this
    CLIP's own text transformer whatever the tower (SGMN's cross model starts from its first
    block and positions).
    """

    def __init__(self, cfg: EncoderConfig, with_text: bool = False, clip_text: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        clip = build_clip(cfg)
        self.visual = clip.visual
        self.logit_scale = clip.logit_scale  # learnable temperature, init log(1/0.07)
        self.with_text = with_text
        self.text_tower = build_text_tower(cfg) if with_text else None
        if clip_text or (with_text and cfg.text_tower == "openai-clip"):
            self.token_embedding = clip.token_embedding
            self.positional_embedding = clip.positional_embedding
            self.transformer = clip.transformer
            self.ln_final = clip.ln_final
            self.text_projection = clip.text_projection
            self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
            self.text_pool_type = getattr(clip, "text_pool_type", "argmax")
        grid = self.visual.grid_size
        self.grid = int(grid[0]) if isinstance(grid, (tuple, list)) else int(grid)
        self.width = int(self.visual.conv1.out_channels)
        self.heads = int(self.visual.transformer.resblocks[0].attn.num_heads)
        self.embed_dim = int(self.visual.proj.shape[1])

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid * self.grid

    def image_tokens(self, images: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """Last-layer tokens before ``ln_post``: [N, 1 + grid**2, width]."""
        v = self.visual
        x = v._embeds(images)
        mask = keys_mask(keep, self.heads, x.dtype) if keep is not None else None
        for block in v.transformer.resblocks:
            x = block(x, attn_mask=mask)
        return x

    def project(self, cls_token: Tensor) -> Tensor:
        """CLS token -> ``ln_post`` -> projection: the global embedding (not normalised)."""
        return self.visual.ln_post(cls_token) @ self.visual.proj

    def encode_images(self, images: Tensor, keep: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Global embeddings [N, E] and patch tokens [N, 1 + grid**2, width]."""
        tokens = self.image_tokens(images, keep)
        return self.project(tokens[:, 0]), tokens

    def encode_frames(self, frames: Tensor, keep: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``frames`` [B, T, 3, H, W] -> per-frame embeddings [B, T, E], tokens [B, T, L, W]."""
        b, t = frames.shape[:2]
        flat_keep = keep.flatten(0, 1) if keep is not None else None
        emb, tokens = self.encode_images(frames.flatten(0, 1), flat_keep)
        return emb.view(b, t, -1), tokens.view(b, t, *tokens.shape[1:])

    # --- text ------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """[N, context_length] BPE ids of this CLIP's own tokenizer (``openai-clip`` tower)."""
        return tokenize_texts("openai-clip", texts, self.cfg.context_length)

    def text_preparer(self, present: bool = False) -> Optional[TextTokens]:
        """What the DataLoader's workers run on a batch for this encoder's text tower: its ids
        (``cn-clip``, ``openai-clip``) and, with ``present``, which strings are non-empty;
        None without a text tower."""
        if not self.with_text:
            return None
        tower = self.cfg.text_tower
        length = self.cfg.text_context_length if tower == "cn-clip" else self.cfg.context_length
        return TextTokens(tower, length, present=present)

    def encode_text(
        self,
        texts: Sequence[str],
        ids: Optional[Sequence[str]] = None,
        kind: str = "asr",
        tokens: Optional[Tensor] = None,
    ) -> Tensor:
        """Text embeddings [N, E] from the profile's tower: OpenAI CLIP's (EOT token ->
        ``ln_final`` -> proj), Chinese-CLIP's ([CLS] -> proj) or the ``kind`` ("asr" | "title")
        embedding file, read by ``ids`` (clip ids for ASR, image ids for titles). ``tokens``:
        the ids the DataLoader's workers built (:meth:`text_preparer`); the texts are then not
        tokenized again."""
        if not self.with_text:
            raise RuntimeError("encoder was built without its text tower")
        if isinstance(self.text_tower, FileTextEmbeddings):
            if ids is None:
                raise ValueError(f"text tower 'file': the batch carries no ids for its {kind} embeddings")
            return self.text_tower(ids, kind)
        if self.text_tower is not None:
            return self.text_tower(texts, tokens)
        if tokens is None:
            tokens = self.tokenize(texts)
        tokens = tokens.to(self.token_embedding.weight.device)
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return x @ self.text_projection


def keys_mask(keep: Tensor, heads: int, dtype: torch.dtype) -> Tensor:
    """Boolean keep [N, L] -> additive attention mask [N * heads, L, L] hiding dropped keys."""
    n, length = keep.shape
    add = torch.zeros(n, 1, 1, length, dtype=dtype, device=keep.device)
    add = add.masked_fill(~keep.view(n, 1, 1, length), float("-inf"))
    return add.expand(n, heads, length, length).reshape(n * heads, length, length)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` [B, T, ...] over T where ``mask`` [B, T] is True (0 for empty rows)."""
    m = mask.to(x.dtype).view(*mask.shape, *([1] * (x.ndim - 2)))
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def video_embedding(frame_emb: Tensor, frame_mask: Tensor) -> Tensor:
    """RICE's video embedding: masked mean of L2-normalised frame embeddings, L2-normalised."""
    return F.normalize(masked_mean(F.normalize(frame_emb, dim=-1), frame_mask), dim=-1)
