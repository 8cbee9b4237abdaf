"""``sgmn``: Spatiotemporal Graph guided Multi-modal Network, one-stage, with its ablations.

Paper: Xiaowan Hu, Yiyi Chen, Yan Li, Minquan Wang, Haoqian Wang, Quan Chen, Han Li, Peng
Jiang, "Spatiotemporal Graph Guided Multi-modal Network for Livestreaming Product Retrieval",
ACM MM 2024 (arXiv 2407.16248). Official code: https://github.com/Huxiaowan/SGMN (CLIP4Clip
based; ``modules/modeling_sgmn.py``, ``graph_loss.py``, ``mca.py``, ``module_mofusion.py``,
``module_tmc.py``, ``train.py``, ``eval_lpr4m.py``, ``eval_mf.py``). The paper's three parts:

========  ==========================================================  =========
switch    what (paper module)                                         label
========  ==========================================================  =========
(always)  GRA: video (frames + temporal difference block) vs image    ``gra``
text      text guidance: ASR and title embeddings, their similarity   ``+text``
          in the score and a text-guided attention over the tokens
graph     GCI: spatiotemporal graph (``methods/sgmn_graph.py``)       ``+gci``
mining    SMF: multi-modal hard example mining, pairwise CE           ``+smf``
========  ==========================================================  =========

``--method sgmn`` is the full model (``gra+text+gci+smf``); ``--set graph=false`` etc. give the
ladder. Ranking is one stage, as ``eval_lpr4m.py``/``eval_mf.py`` with ``--embedding_sim``
rank: score = cos(video, image) + 0.5 cos(ASR, title). The embedding is
``[v, sqrt(0.5) a]`` against ``[g, sqrt(0.5) t]`` (all unit vectors), whose cosine is that
score / 1.5: the same ranking, through the benchmark's cosine. GCI and SMF shape training only.

Kept from the official code
  * one shared CLIP ViT (paper profile: ViT-B/32, OpenAI weights with QuickGELU); frame and image
    global embeddings = CLS -> ln_post -> proj; tokens = every token through ln_post -> proj;
  * the temporal difference block (``_temporal_difference_block_tdb``): frame differences plus
    frame positions through one attention layer, ``2 sigmoid(LN(.)) - 1``, interleaved with the
    frames (position + type embeddings), 2 layers (``cross_num_hidden_layers``), frame slots
    read out plus the input frames; frames L2-normalised, masked mean, L2-normalised;
  * text: ``fc_asr`` / ``fc_title`` (Linear D -> D) on 512-d ASR / title embeddings; ``txt``
    loss = CE over 100 x cos(ASR, title); the text-guided attention (``--mo_fusion``): one
    post-LN cross-attention layer (8 heads, FFN 2D, dropout 0.1), shared by both sides, in which
    the L2-normalised tokens attend to the text token;
  * ``base`` = distance-weighted triplet (margin 0.2) between video and image embeddings, GCI's
    ``gnn`` and ``reg`` losses (see ``methods.sgmn_graph``), all summed with weight 1 (reg x 10);
  * SMF: per image its own clip and the 3 clips ranked highest by the full score (text included),
    scored by the cross model: position embeddings (from CLIP's text positions) on the image
    tokens, one self-attention block initialised from CLIP's first text block, one randomly
    initialised cross-attention block over all tokens of all frames (padding frames masked),
    pooler LN -> token 0 -> Linear -> QuickGELU, ``Linear(D, 1)``; 4-way CE on 100 x score;
  * the official training command (README, ``train.py``), as the paper profile's recipe
    (``TRAIN_RECIPE``, applied over the shared paper profile, which is RICE's run): CLIP
    parameters at lr x ``coef_lr`` (3e-4 x 1e-3), the rest at 3e-4, weight decay 0.2, warmup 0.1
    + cosine, gradient clip 1.0, eps 1e-6, 10 epochs, global batch 256; 10 frames, fp16.

Departures, and why
  * Text embeddings: the official code reads 512-d ASR/title embeddings precomputed by a text
    model it does not name (``training_seg2emb_65w.json``; not released). Here the encoder's own
    CLIP text tower computes them: frozen in the paper profile (fixed features, as there),
    trained in the tiny profile (a frozen random tower would carry no text).
  * The official pairwise loss applies ``CrossEn`` (``torch.diag`` of log-softmax) to the
    [B, 4] candidate logits, whose diagonal is only its first 4 rows, with candidate j as the
    "positive" of row j; here every row's positive (column 0) is the target.
  * A difference token takes part only between two real frames; the official mask keeps the one
    from the last real frame into the (zero) padding, so a clip's embedding depended on padding.
  * Same-product clips are neither hard negatives nor triplet negatives (the official code only
    excludes the pair itself); the official optimiser is BertAdam (betas 0.9/0.98, eps 1e-6),
    here the benchmark's AdamW with the same groups.

Scaled down (tiny profile, 2-core CPU): RICE's tiny encoder (``TINY_ENCODER``: 112 px, patch 16,
width 192, 4 layers, embedding 128, a conv stem, random init), 4 frames, the benchmark's tiny
optimiser (one lr 5e-4, batch 32, 4 epochs), GCI's top-K = the number of frames; everything
else as above, so its rows compare with RICE's tiny rows. From random weights SGMN's margin
triplets start on collapsed embeddings and learn slowly in that budget (movingfashion-synth
numbers and the side-by-side inference cost: ``docs/sgmn.md``). With ``text=false`` the text tower is
still built, frozen, as the source of the cross model's first block (CLIP's, as officially).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.base import DataInfo, Encoded, Method, check_image_size
from methods.encoders import PAPER_ENCODER, TINY_ENCODER, ClipEncoder, EncoderConfig, masked_mean
from methods.losses import gather_nograd, gather_with_grad, hardest_negatives, local_offset
from methods.sgmn_graph import GraphInteraction, distance_weighted_triplet


@dataclass(frozen=True)
class SgmnConfig:
    encoder: EncoderConfig = PAPER_ENCODER
    require_pretrained: bool = True  # paper: refuse a randomly initialised encoder
    # the three parts
    text: bool = True
    graph: bool = True
    mining: bool = True
    train_text_tower: bool = False  # paper: fixed text features, as the precomputed ones
    text_weight: float = 0.5  # score = cos(video, image) + 0.5 cos(ASR, title)
    logit_scale: float = 100.0  # fixed, training only
    tdb_layers: int = 2  # --cross_num_hidden_layers 2
    tdb_heads: int = 0  # 0: embedding width // 64, as the official transformer_heads
    fusion_heads: int = 8
    smf_heads: int = 8
    num_negatives: int = 3
    exclude_same_product: bool = True
    graph_heads: int = 16
    graph_topk: int = 10  # capped at the number of frames
    triplet_margin: float = 0.2
    w_reg: float = 10.0


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """A pre-LN transformer block (CLIP's): self- or cross-attention, then an MLP.

    Built fresh (QuickGELU MLP) or copied from an open_clip block (``source``). For
    cross-attention the keys go through the same ``ln_1`` as the queries (the official
    ``ResidualCrossAttention``). ``key_pad`` [N, S] is True where a key is padding.
    """

    def __init__(self, width: int, heads: int, source: Optional[nn.Module] = None, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if source is not None:
            self.ln_1, self.attn = copy.deepcopy(source.ln_1), copy.deepcopy(source.attn)
            self.ln_2, self.mlp = copy.deepcopy(source.ln_2), copy.deepcopy(source.mlp)
            self.ls_1 = copy.deepcopy(getattr(source, "ls_1", nn.Identity()))
            self.ls_2 = copy.deepcopy(getattr(source, "ls_2", nn.Identity()))
        else:
            self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, dropout=attn_dropout, batch_first=True)
            self.mlp = nn.Sequential(OrderedDict(
                c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width)))
            self.ls_1, self.ls_2 = nn.Identity(), nn.Identity()

    def forward(self, x: Tensor, kv: Optional[Tensor] = None, key_pad: Optional[Tensor] = None) -> Tensor:
        q = self.ln_1(x)
        k = self.ln_1(kv) if kv is not None else q
        if not self.attn.batch_first:
            q, k = q.transpose(0, 1), k.transpose(0, 1)
        out = self.attn(q, k, k, key_padding_mask=_never_all(key_pad), need_weights=False)[0]
        if not self.attn.batch_first:
            out = out.transpose(0, 1)
        x = x + self.ls_1(out)
        return x + self.ls_2(self.mlp(self.ln_2(x)))


def _never_all(key_pad: Optional[Tensor]) -> Optional[Tensor]:
    """A padding mask that leaves every row at least its first key (no all-masked softmax)."""
    if key_pad is None:
        return None
    full = key_pad.all(dim=1)
    if bool(full.any()):
        key_pad = key_pad.clone()
        key_pad[full, 0] = False
    return key_pad


class TemporalDifferenceBlock(nn.Module):
    """Frames and their differences, interleaved, through a small transformer (official TDB)."""

    def __init__(self, dim: int, num_frames: int, layers: int, heads: int) -> None:
        super().__init__()
        self.frame_position = nn.Embedding(max(num_frames, 1), dim)
        self.type_embedding = nn.Embedding(2, dim)  # 1: frame token, 0: difference token
        self.difference_attention = Block(dim, heads)
        self.difference_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        """``frames`` [B, T, D], ``mask`` [B, T] (True = real frame) -> [B, T, D]."""
        b, t, d = frames.shape
        pos = self.frame_position.weight[:t].to(frames.dtype)
        typ = self.type_embedding.weight.to(frames.dtype)
        if t == 1:
            z, keep = frames + pos + typ[1], mask
        else:
            diff = frames[:, 1:] - frames[:, :-1] + pos[1:]
            diff = self.difference_attention(diff, key_pad=~mask[:, 1:])
            diff = 2 * torch.sigmoid(self.difference_norm(diff)) - 1
            z = frames.new_empty(b, 2 * t - 1, d)
            z[:, 0::2] = frames + pos + typ[1]
            z[:, 1::2] = diff + pos[:-1] + typ[0]  # the difference of frames i, i+1 sits at i
            keep = mask.new_empty(b, 2 * t - 1)
            keep[:, 0::2], keep[:, 1::2] = mask, mask[:, :-1] & mask[:, 1:]  # official: mask[:, :-1]
        for block in self.blocks:
            z = block(z, key_pad=~keep)
        return z[:, 0::2] + frames


class TextGuidedAttention(nn.Module):
    """Tokens attend to the text token (official ``CrossAttentionLayer``, post-LN)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_1, self.norm_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, text: Tensor) -> Tensor:
        """``tokens`` [N, L, D], ``text`` [N, D] -> [N, L, D]."""
        text = text[:, None].to(tokens.dtype)
        x = self.norm_1(tokens + self.dropout(self.attn(tokens, text, text, need_weights=False)[0]))
        return self.norm_2(x + self.dropout(self.ffn(x)))


class HardExampleMatcher(nn.Module):
    """SMF's cross model: scores (image, clip) pairs from their tokens (training only)."""

    def __init__(self, dim: int, heads: int, num_positions: int, first_text_block: nn.Module,
                 text_positions: Tensor, dropout: float = 0.1) -> None:
        super().__init__()
        self.position = nn.Embedding(num_positions, dim)
        nn.init.normal_(self.position.weight, std=0.01)
        n = min(num_positions, text_positions.shape[0])
        with torch.no_grad():
            self.position.weight[:n] = text_positions[:n].detach()
        self.dropout = nn.Dropout(dropout)
        self.self_block = Block(dim, heads, source=first_text_block)
        self.cross_block = Block(dim, heads, attn_dropout=dropout)
        self.pool_norm = nn.LayerNorm(dim)
        self.pool_dense = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, queries: Tensor, keys: Tensor, key_keep: Tensor, key_index: Tensor, query_index: Tensor) -> Tensor:
        """Scores [P] of pairs (``queries[query_index[p]]``, ``keys[key_index[p]]``)."""
        x = self.dropout(queries + self.position.weight[: queries.shape[1]].to(queries.dtype))
        x = self.self_block(x)[query_index]
        x = self.cross_block(x, kv=keys[key_index], key_pad=~key_keep[key_index])
        pooled = QuickGELU()(self.pool_dense(self.pool_norm(x)[:, 0]))
        return self.head(pooled).squeeze(-1)


@METHODS.register("sgmn", description="SGMN (ACM MM 2024): text-guided, spatiotemporal graph, hard example mining; one stage")
class Sgmn(Method):
    """SGMN: GRA embeddings (TDB video, ASR/title), GCI graph losses, SMF hard mining."""
    MAIN_VARIANT = ("gra+text+gci+smf",)  # the full model: text, graph interaction, self-supervised mining

    Config = SgmnConfig
    TRAIN_RECIPE = {"paper": {"batch_size": 256, "epochs": 10, "updates": None, "warmup_ratio": 0.1,
                              "lr_encoder": 3e-7, "lr_new": 3e-4, "weight_decay": 0.2, "grad_clip": 1.0,
                              "adam_eps": 1e-6}}
    PROFILES = {
        "paper": SgmnConfig(encoder=PAPER_ENCODER),
        "tiny": SgmnConfig(
            encoder=TINY_ENCODER, require_pretrained=False, train_text_tower=True,
        ),
    }
    encoder_prefixes = ("encoder.",)

    def __init__(self, cfg: SgmnConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self._check(cfg, info)
        self.encoder = ClipEncoder(cfg.encoder, with_text=cfg.text, clip_text=cfg.mining)
        self.encoder.logit_scale.requires_grad_(False)  # SGMN's scale is a fixed 100
        dim = self.encoder.embed_dim
        self.temporal = TemporalDifferenceBlock(dim, info.num_frames, cfg.tdb_layers, cfg.tdb_heads or max(1, dim // 64))
        self.fc_asr = self.fc_title = self.fusion = self.matcher = self.graph = None
        if cfg.text:
            self.fc_asr, self.fc_title = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.fusion = TextGuidedAttention(dim, cfg.fusion_heads)
        if cfg.graph:
            self.graph = GraphInteraction(dim, min(cfg.graph_topk, info.num_frames), cfg.graph_heads,
                                          margin=cfg.triplet_margin, w_reg=cfg.w_reg)
        if cfg.mining:
            text_blocks = self.encoder.transformer.resblocks
            if text_blocks[0].attn.embed_dim != dim:
                raise ValueError(f"sgmn: the cross model copies a text block of width {text_blocks[0].attn.embed_dim}, "
                                 f"but the embedding width is {dim}")
            self.matcher = HardExampleMatcher(dim, cfg.smf_heads, max(self.encoder.num_tokens, 1),
                                              text_blocks[0], self.encoder.positional_embedding)
        for module in (self.temporal, self.fc_asr, self.fc_title, self.fusion, self.graph):
            if module is not None:
                module.apply(_init_new)
        if self.matcher is not None:  # its self block keeps CLIP's text weights
            for m in (self.matcher.cross_block, self.matcher.pool_norm, self.matcher.pool_dense, self.matcher.head):
                m.apply(_init_new)
        self._text_tower_grad(cfg.text and cfg.train_text_tower)

    def _text_tower_grad(self, trainable: bool) -> None:
        """The text tower trains only in the tiny profile; CLIP's own text transformer, when it is
        not the tower (the cross model's source), never does."""
        enc = self.encoder
        if enc.text_tower is not None:
            enc.text_tower.requires_grad_(trainable)
        own = trainable and enc.cfg.text_tower == "openai-clip"
        for name in ("token_embedding", "transformer", "ln_final"):
            if hasattr(enc, name):
                getattr(enc, name).requires_grad_(own)
        for name in ("positional_embedding", "text_projection"):
            if hasattr(enc, name):
                getattr(enc, name).requires_grad_(own)

    @staticmethod
    def _check(cfg: SgmnConfig, info: DataInfo) -> None:
        check_image_size("sgmn", cfg.encoder.image_size, info)
        if cfg.require_pretrained and not cfg.encoder.pretrained:
            raise ValueError("sgmn (paper profile): the encoder needs pretrained CLIP weights; set encoder.pretrained "
                             "to a hub tag (openai) or pass --pretrained PATH (a local open_clip checkpoint)")
        if cfg.text_weight < 0:
            raise ValueError(f"sgmn: text_weight must be >= 0, got {cfg.text_weight}")

    def variant(self) -> str:
        parts = ["gra"] + [name for name, on in (("text", self.cfg.text), ("gci", self.cfg.graph),
                                                 ("smf", self.cfg.mining)) if on]
        return "+".join(parts)

    # --- the contract ---------------------------------------------------------------
    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        video, _, _ = self._video(batch["frames"], batch["frame_mask"].bool(), tokens=False)
        return Encoded(self._fused(video, self._text(batch.get("asr"), video.shape[0], self.fc_asr,
                                                        batch.get("clip_id"), "asr")))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        image, _ = self._image(batch["image"])
        return Encoded(self._fused(image, self._text(batch.get("title"), image.shape[0], self.fc_title,
                                                        batch.get("image_id"), "title")))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        cfg = self.cfg
        frame_mask = batch["frame_mask"].bool()
        video, frames, v_tok = self._video(batch["frames"], frame_mask, tokens=cfg.mining)
        image, i_tok = self._image(batch["image"])
        b = video.shape[0]
        product = batch.get("product")
        labels = product if product is not None else torch.arange(b, device=video.device) + local_offset(b)
        all_video, all_image, all_labels = gather_with_grad(video), gather_with_grad(image), gather_nograd(labels)
        losses = {"base": distance_weighted_triplet(all_video @ all_image.t(), all_labels, all_labels,
                                                    cfg.triplet_margin, video.shape[1])}
        asr = title = None
        if cfg.text:
            asr = self._text(batch.get("asr"), b, self.fc_asr, batch.get("clip_id"), "asr")
            title = self._text(batch.get("title"), b, self.fc_title, batch.get("image_id"), "title")
            target = torch.arange(b, device=video.device) + local_offset(b)
            losses["txt"] = F.cross_entropy(cfg.logit_scale * asr.float() @ gather_with_grad(title).float().t(), target)
        if self.graph is not None:
            losses.update(self.graph(all_video, all_image, gather_with_grad(frames), all_labels))
        if self.matcher is not None:
            losses["smf"] = self._mining_loss(video, image, asr, title, v_tok, i_tok, frame_mask, labels, all_labels)
        return losses

    # --- sides ------------------------------------------------------------------------
    def _tokens(self, images: Tensor) -> Tensor:
        """Every token through ``ln_post`` and the projection: [N, 1 + grid**2, D]."""
        visual = self.encoder.visual
        return visual.ln_post(self.encoder.image_tokens(images)) @ visual.proj

    def _video(self, frames: Tensor, mask: Tensor, tokens: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Video embedding [B, D], normalised TDB frames [B, T, D], tokens [B, T * L, D] or None."""
        b, t = frames.shape[:2]
        tok = self._tokens(frames.flatten(0, 1))
        per_frame = F.normalize(self.temporal(tok[:, 0].view(b, t, -1), mask).float(), dim=-1)
        video = F.normalize(masked_mean(per_frame, mask), dim=-1)
        return video, per_frame, (tok.view(b, t * tok.shape[1], -1) if tokens else None)

    def _image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        tok = self._tokens(images)
        return F.normalize(tok[:, 0].float(), dim=-1), tok

    def _text(self, texts: Optional[Sequence[str]], n: int, fc: Optional[nn.Linear],
              ids: Optional[Sequence[str]] = None, kind: str = "asr") -> Optional[Tensor]:
        """L2-normalised ``fc(text embedding)`` [N, D] (None without text guidance)."""
        if fc is None:
            return None
        texts = list(texts) if texts is not None else [""] * n
        if len(texts) != n:
            raise ValueError(f"sgmn: {len(texts)} texts for a batch of {n}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_text_tower):
            emb = self.encoder.encode_text(texts, ids, kind)
        return F.normalize(fc(emb.to(fc.weight.dtype)).float(), dim=-1)

    def _fused(self, visual: Tensor, text: Optional[Tensor]) -> Tensor:
        """``[visual, sqrt(w) text]``: its cosine is (cos_visual + w cos_text) / (1 + w)."""
        if text is None:
            return visual
        return torch.cat([visual, math.sqrt(self.cfg.text_weight) * text], dim=-1)

    # --- SMF: multi-modal hard example mining -----------------------------------------
    def _mining_loss(self, video: Tensor, image: Tensor, asr: Optional[Tensor], title: Optional[Tensor],
                     v_tok: Tensor, i_tok: Tensor, frame_mask: Tensor, labels: Tensor, all_labels: Tensor) -> Tensor:
        cfg, b = self.cfg, image.shape[0]
        assert self.matcher is not None
        if self.fusion is not None:  # text-guided attention on the L2-normalised tokens
            assert asr is not None and title is not None
            v_tok = self.fusion(F.normalize(v_tok, dim=-1), asr)
            i_tok = self.fusion(F.normalize(i_tok, dim=-1), title)
        with torch.no_grad():  # the full (GRA) score ranks the candidates
            score = image @ gather_nograd(video).t()
            if asr is not None and title is not None:
                score = score + cfg.text_weight * title @ gather_nograd(asr).t()
            exclude = labels[:, None] == all_labels[None, :] if cfg.exclude_same_product else None
            positive = torch.arange(b, device=image.device) + local_offset(b)
            negatives, valid = hardest_negatives(score, positive, cfg.num_negatives, exclude)
        cand = torch.cat([positive[:, None], negatives], dim=1)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        keep = frame_mask[:, :, None].expand(-1, -1, v_tok.shape[1] // frame_mask.shape[1]).flatten(1)
        all_tok, all_keep = gather_with_grad(v_tok), gather_nograd(keep)
        pairs_of = torch.arange(b, device=image.device).repeat_interleave(cand.shape[1])
        scores = self.matcher(i_tok, all_tok, all_keep, cand.flatten(), pairs_of).view(b, -1)
        logits = (cfg.logit_scale * scores.float()).masked_fill(~valid, float("-inf"))
        return F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=logits.device))


def _init_new(module: nn.Module) -> None:
    """The official ``init_weights`` for new modules: N(0, 0.02) weights, zero biases, unit LNs."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
