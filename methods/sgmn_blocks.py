"""SGMN's building blocks (official ``modeling_sgmn.py``, ``module_mofusion.py``, ``module_cross.py``):
a CLIP-style transformer block, the temporal difference block, the text-guided attention and the
hard example matcher (SMF's cross model). The model and its losses are in :mod:`methods.sgmn`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor, nn


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
            self.mlp = nn.Sequential(
                OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width))
            )
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

    def __init__(
        self,
        dim: int,
        heads: int,
        num_positions: int,
        first_text_block: nn.Module,
        text_positions: Tensor,
        dropout: float = 0.1,
    ) -> None:
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

    def forward(
        self, queries: Tensor, keys: Tensor, key_keep: Tensor, key_index: Tensor, query_index: Tensor
    ) -> Tensor:
        """Scores [P] of pairs (``queries[query_index[p]]``, ``keys[key_index[p]]``)."""
        x = self.dropout(queries + self.position.weight[: queries.shape[1]].to(queries.dtype))
        x = self.self_block(x)[query_index]
        x = self.cross_block(x, kv=keys[key_index], key_pad=~key_keep[key_index])
        pooled = QuickGELU()(self.pool_dense(self.pool_norm(x)[:, 0]))
        return self.head(pooled).squeeze(-1)
