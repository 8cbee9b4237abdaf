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
  * the official training command and optimiser (README, ``train.py``, ``optimization.py``) as
    the paper profile's ``TRAIN_RECIPE``: CLIP parameters at lr x ``coef_lr`` (3e-4 x 1e-3), the
    rest at 3e-4, weight decay 0.2 on every parameter but those named ``bias`` /
    ``LayerNorm.*`` (``decay_groups="official"``: CLIP's ``ln_*`` weights and embeddings decay),
    betas 0.9/0.98, eps 1e-6, BertAdam's schedule (warmup over 0.1 of the run, then a cosine
    over the whole run's progress), gradient clip 1.0, 10 epochs, global batch 256, fp32 (the
    official model runs ``.float()`` and never uses ``--fp16``);
  * the official preprocessing (``rawframe_util.py``: ``Resize((224, 224))`` bicubic, a no-op
    ``CenterCrop(224)``; no spatial augmentation, the LPR4M loader's random tail cut kept) and
    evaluation's frame pick ``linspace(0, n, 10, endpoint=False)`` (``eval_lpr4m.py``), as the
    recipe's ``data`` entry.

Departures, and why
  * Text embeddings: the official code reads 512-d ASR/title embeddings precomputed by a text
    model it does not name (``training_seg2emb_65w.json``, ``training_item2emb_155100.json``; not
    released); 512 is Chinese-CLIP ViT-B/16's width and LPR4M's text is Chinese. The paper
    profile embeds with Chinese-CLIP's text tower (``methods.text_towers``), frozen (fixed
    features, as there); ``--set encoder.text_tower=file`` reads such files instead. The tiny
    profile trains a small random BERT on the Chinese-CLIP tokenizer (a frozen random tower
    would carry no text).
  * The official pairwise loss applies ``CrossEn`` (``torch.diag`` of log-softmax) to the
    [B, 4] candidate logits, whose diagonal is only its first 4 rows, with candidate j as the
    "positive" of row j; here every row's positive (column 0) is the target.
    ``--set smf_target=official`` restores the official target (variant ``smf-official``).
  * A difference token takes part only between two real frames; the official mask keeps the one
    from the last real frame into the (zero) padding, so a clip's embedding depended on padding.
  * Same-product clips are neither hard negatives nor triplet negatives (the official code only
    excludes the pair itself).
  * Optimiser: torch's AdamW with BertAdam's betas, eps, decay groups and schedule, but with
    Adam's bias correction. BertAdam has none, so its step t is this one's times
    ``(1 - 0.9**t) / sqrt(1 - 0.98**t)`` (0.71 at t=1, 1.52 at t=10, 1.07 at t=100, 1.01 at
    t=200): a difference inside the first few hundred updates, which the warmup (10% of the run,
    from lr 0) covers. BertAdam also clips each parameter's gradient to norm 1.0 on top of the
    global clip; not done here. Neither is measured.
  * MovingFashion: the official MF training loader does not cut the clip's tail; here the
    benchmark's data pipeline cuts it on every dataset.

Scaled down (tiny profile, 2-core CPU): RICE's tiny encoder (``TINY_ENCODER``: 112 px, patch 16,
width 192, 4 layers, embedding 128, a conv stem, random init), 4 frames, the benchmark's tiny
optimiser (one lr 5e-4, batch 32, 4 epochs), GCI's top-K = the number of frames; everything
else as above (decay groups: the benchmark's, ``decay_groups="benchmark"``, as its committed
rows), so its rows compare with RICE's tiny rows. From random weights SGMN's margin
triplets start on collapsed embeddings and learn slowly in that budget (movingfashion-synth
numbers and the side-by-side inference cost: ``docs/sgmn.md``). Whenever SMF is on, CLIP's own text
transformer is built too, frozen, as the source of the cross model's first block and positions
(CLIP's, as officially), whatever the text tower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.base import DataInfo, Encoded, Method, check_image_size
from methods.encoders import PAPER_ENCODER, TINY_ENCODER, ClipEncoder, EncoderConfig, masked_mean, refuse_random_text
from methods.gather import gather_packed
from methods.losses import hardest_negatives, local_offset
from methods.sgmn_blocks import HardExampleMatcher, TemporalDifferenceBlock, TextGuidedAttention
from methods.sgmn_graph import GraphInteraction, distance_weighted_triplet
from methods.text_tokens import TextTokens, batch_tokens

SMF_TARGETS = ("positive", "official")
OFFICIAL_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")  # train.py's no_decay names


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
    # SMF's target: "positive" = column 0 (the pair's own clip) for every row; "official" = the
    # official CrossEn (torch.diag of the [B, 4] log-softmax: row j's target is candidate j, j < 4)
    smf_target: Literal["positive", "official"] = "positive"
    # weight-decay groups: "official" = every parameter decays but those named bias /
    # LayerNorm.weight / LayerNorm.bias (train.py); "benchmark" = methods.base's (1-D params,
    # positional embeddings and logit scales exempt), kept by the tiny profile's rows
    decay_groups: Literal["official", "benchmark"] = "official"


@METHODS.register(
    "sgmn", description="SGMN (ACM MM 2024): text-guided, spatiotemporal graph, hard example mining; one stage"
)
class Sgmn(Method):
    """SGMN: GRA embeddings (TDB video, ASR/title), GCI graph losses, SMF hard mining."""

    MAIN_VARIANT = ("gra+text+gci+smf",)  # the full model: text, graph interaction, self-supervised mining

    Config = SgmnConfig
    # the official command and BertAdam (train.py, modules/optimization.py): fp32, betas 0.9/0.98,
    # eps 1e-6, warmup 0.1 then a cosine over the whole run; the official preprocessing
    # (rawframe_util.py: Resize((224, 224)) bicubic + CenterCrop 224, no spatial augmentation; the
    # LPR4M training loader's random tail cut kept) and eval_lpr4m.py's linspace(0, n, 10, endpoint=False)
    TRAIN_RECIPE = {
        "paper": {
            "batch_size": 256,
            "epochs": 10,
            "updates": None,
            "warmup_ratio": 0.1,
            "lr_encoder": 3e-7,
            "lr_new": 3e-4,
            "weight_decay": 0.2,
            "grad_clip": 1.0,
            "adam_eps": 1e-6,
            "adam_beta2": 0.98,
            "schedule": "bert_warmup_cosine",
            "amp": False,
            "data": {
                "resize_size": 224,
                "resize_mode": "square",
                "interpolation": "bicubic",
                "train_spatial": False,
                "eval_frame_pick": "rice-mf",
            },
        }
    }
    PROFILES = {
        "paper": SgmnConfig(encoder=PAPER_ENCODER),
        "tiny": SgmnConfig(
            encoder=TINY_ENCODER, require_pretrained=False, train_text_tower=True, decay_groups="benchmark"
        ),
    }
    encoder_prefixes = ("encoder.",)

    def __init__(self, cfg: SgmnConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self._check(cfg, info)
        self.encoder = ClipEncoder(cfg.encoder, with_text=cfg.text, clip_text=cfg.mining)
        self.encoder.logit_scale.requires_grad_(False)  # SGMN's scale is a fixed 100
        dim = self.encoder.embed_dim
        self.temporal = TemporalDifferenceBlock(
            dim, info.num_frames, cfg.tdb_layers, cfg.tdb_heads or max(1, dim // 64)
        )
        self.fc_asr = self.fc_title = self.fusion = self.matcher = self.graph = None
        if cfg.text:
            self.fc_asr, self.fc_title = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.fusion = TextGuidedAttention(dim, cfg.fusion_heads)
        if cfg.graph:
            self.graph = GraphInteraction(
                dim, min(cfg.graph_topk, info.num_frames), cfg.graph_heads, margin=cfg.triplet_margin, w_reg=cfg.w_reg
            )
        if cfg.mining:
            text_blocks = self.encoder.transformer.resblocks
            if text_blocks[0].attn.embed_dim != dim:
                raise ValueError(
                    f"sgmn: the cross model copies a text block of width {text_blocks[0].attn.embed_dim}, "
                    f"but the embedding width is {dim}"
                )
            self.matcher = HardExampleMatcher(
                dim, cfg.smf_heads, max(self.encoder.num_tokens, 1), text_blocks[0], self.encoder.positional_embedding
            )
        for module in (self.temporal, self.fc_asr, self.fc_title, self.fusion, self.graph):
            if module is not None:
                module.apply(_init_new)
        if self.matcher is not None:  # its self block keeps CLIP's text weights
            for m in (self.matcher.cross_block, self.matcher.pool_norm, self.matcher.pool_dense, self.matcher.head):
                m.apply(_init_new)
        self._text_tower_grad(cfg.text and cfg.train_text_tower)

    def parameter_groups(self, lr_encoder: float, lr_new: float, weight_decay: float) -> list[dict]:
        """``decay_groups="official"``: the official split (train.py ``prep_optimizer``): a name
        containing ``bias``, ``LayerNorm.bias`` or ``LayerNorm.weight`` does not decay, every other
        parameter does (CLIP's ``ln_*`` weights and embeddings included); CLIP at ``lr_encoder``."""
        groups = super().parameter_groups(lr_encoder, lr_new, weight_decay)  # methods.base's split
        if self.cfg.decay_groups == "benchmark":
            return groups
        rate = {g["name"].split("-")[0]: g["lr"] for g in groups}
        decay = max((g["weight_decay"] for g in groups), default=weight_decay)
        out: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                side = "encoder" if name.startswith(self.encoder_prefixes) else "new"
                out.setdefault((side, any(k in name for k in OFFICIAL_NO_DECAY)), []).append(p)
        return [
            {
                "params": ps,
                "lr": rate.get(side, lr_encoder if side == "encoder" else lr_new),
                "weight_decay": 0.0 if nd else decay,
                "name": f"{side}{'-nodecay' if nd else ''}",
            }
            for (side, nd), ps in sorted(out.items())
        ]

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
            raise ValueError(
                "sgmn (paper profile): the encoder needs pretrained CLIP weights; set encoder.pretrained "
                "to a hub tag (openai) or pass --pretrained PATH (a local open_clip checkpoint)"
            )
        if cfg.require_pretrained and cfg.text:
            refuse_random_text(cfg.encoder, "sgmn")
        if cfg.smf_target not in SMF_TARGETS:
            raise ValueError(f"sgmn: smf_target must be one of {SMF_TARGETS}, got {cfg.smf_target!r}")
        if cfg.decay_groups not in ("official", "benchmark"):
            raise ValueError(f"sgmn: decay_groups must be official or benchmark, got {cfg.decay_groups!r}")
        if cfg.text_weight < 0:
            raise ValueError(f"sgmn: text_weight must be >= 0, got {cfg.text_weight}")

    def variant(self) -> str:
        smf = "smf-official" if self.cfg.smf_target == "official" else "smf"
        parts = ["gra"] + [
            name for name, on in (("text", self.cfg.text), ("gci", self.cfg.graph), (smf, self.cfg.mining)) if on
        ]
        return "+".join(parts)

    # --- the contract ---------------------------------------------------------------
    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        video, _, _ = self._video(batch["frames"], batch["frame_mask"].bool(), tokens=False)
        return Encoded(self._fused(video, self._batch_text(batch, "asr", video.shape[0])))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        image, _ = self._image(batch["image"])
        return Encoded(self._fused(image, self._batch_text(batch, "title", image.shape[0])))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        cfg = self.cfg
        frame_mask = batch["frame_mask"].bool()
        video, frames, v_tok = self._video(batch["frames"], frame_mask, tokens=cfg.mining)
        image, i_tok = self._image(batch["image"])
        b = video.shape[0]
        product = batch.get("product")
        labels = product if product is not None else torch.arange(b, device=video.device) + local_offset(b)
        # two collectives under DDP: the visual embeddings before the base loss, whose sampling
        # draws random numbers before the text tower's (so the order of the draws is kept)
        local = {"video": video, "image": image, "labels": labels}
        if self.graph is not None:
            local["frames"] = frames
        everyone = dict(zip(local, gather_packed(*local.values())))
        all_video, all_image, all_labels = everyone["video"], everyone["image"], everyone["labels"]
        losses = {
            "base": distance_weighted_triplet(
                all_video @ all_image.t(), all_labels, all_labels, cfg.triplet_margin, video.shape[1]
            )
        }
        asr = title = None
        if cfg.text:
            asr, title = self._batch_text(batch, "asr", b), self._batch_text(batch, "title", b)
        if self.graph is not None:
            losses.update(self.graph(all_video, all_image, everyone["frames"], all_labels))
        local = {"title": title} if title is not None else {}
        if self.matcher is not None:
            mining, i_tok = self._mining_local(asr, title, v_tok, i_tok, frame_mask)
            local.update(mining)
        everyone.update(zip(local, gather_packed(*local.values())))
        if cfg.text:
            assert asr is not None
            target = torch.arange(b, device=video.device) + local_offset(b)
            losses["txt"] = F.cross_entropy(cfg.logit_scale * asr.float() @ everyone["title"].float().t(), target)
        if self.matcher is not None:
            losses["smf"] = self._mining_loss(image, title, i_tok, labels, everyone)
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

    def batch_preparer(self) -> Optional[TextTokens]:
        """The text tower's ids of the ASR and titles, built in the DataLoader's workers."""
        return self.encoder.text_preparer() if self.cfg.text else None

    def _batch_text(self, batch: dict[str, Any], kind: str, n: int) -> Optional[Tensor]:
        """:meth:`_text` of ``batch[kind]`` ("asr" | "title"), from the workers' ids when present."""
        fc, ids = (self.fc_asr, "clip_id") if kind == "asr" else (self.fc_title, "image_id")
        return self._text(batch.get(kind), n, fc, batch.get(ids), kind, batch_tokens(batch, kind))

    def _text(
        self,
        texts: Optional[Sequence[str]],
        n: int,
        fc: Optional[nn.Linear],
        ids: Optional[Sequence[str]] = None,
        kind: str = "asr",
        tokens: Optional[Tensor] = None,
    ) -> Optional[Tensor]:
        """L2-normalised ``fc(text embedding)`` [N, D] (None without text guidance); ``tokens``:
        the ids the DataLoader's workers built (:meth:`batch_preparer`)."""
        if fc is None:
            return None
        texts = list(texts) if texts is not None else [""] * n
        if len(texts) != n:
            raise ValueError(f"sgmn: {len(texts)} texts for a batch of {n}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_text_tower):
            emb = self.encoder.encode_text(texts, ids, kind, tokens)
        return F.normalize(fc(emb.to(fc.weight.dtype)).float(), dim=-1)

    def _fused(self, visual: Tensor, text: Optional[Tensor]) -> Tensor:
        """``[visual, sqrt(w) text]``: its cosine is (cos_visual + w cos_text) / (1 + w)."""
        if text is None:
            return visual
        return torch.cat([visual, math.sqrt(self.cfg.text_weight) * text], dim=-1)

    # --- SMF: multi-modal hard example mining -----------------------------------------
    def _mining_local(
        self, asr: Optional[Tensor], title: Optional[Tensor], v_tok: Tensor, i_tok: Tensor, frame_mask: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """SMF's inputs from every rank, by name (the text-fused clip tokens and their keep-mask,
        the ASR embeddings for the ranking), and this rank's text-fused image tokens."""
        if self.fusion is not None:  # text-guided attention on the L2-normalised tokens
            assert asr is not None and title is not None
            v_tok = self.fusion(F.normalize(v_tok, dim=-1), asr)
            i_tok = self.fusion(F.normalize(i_tok, dim=-1), title)
        keep = frame_mask[:, :, None].expand(-1, -1, v_tok.shape[1] // frame_mask.shape[1]).flatten(1)
        local = {"v_tok": v_tok, "keep": keep}
        if asr is not None:
            local["asr"] = asr.detach()
        return local, i_tok

    def _mining_loss(
        self, image: Tensor, title: Optional[Tensor], i_tok: Tensor, labels: Tensor, everyone: dict[str, Tensor]
    ) -> Tensor:
        """SMF's loss; ``everyone``: the tensors of :meth:`_mining_local` and the embeddings from
        every rank; ``i_tok``: this rank's text-fused image tokens."""
        cfg, b = self.cfg, image.shape[0]
        assert self.matcher is not None
        all_labels, asr_all = everyone["labels"], everyone.get("asr")
        with torch.no_grad():  # the full (GRA) score ranks the candidates
            score = image @ everyone["video"].detach().t()
            if asr_all is not None and title is not None:
                score = score + cfg.text_weight * title @ asr_all.t()
            exclude = labels[:, None] == all_labels[None, :] if cfg.exclude_same_product else None
            positive = torch.arange(b, device=image.device) + local_offset(b)
            negatives, valid = hardest_negatives(score, positive, cfg.num_negatives, exclude)
        cand = torch.cat([positive[:, None], negatives], dim=1)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        all_tok, all_keep = everyone["v_tok"], everyone["keep"]
        pairs_of = torch.arange(b, device=image.device).repeat_interleave(cand.shape[1])
        scores = self.matcher(i_tok, all_tok, all_keep, cand.flatten(), pairs_of).view(b, -1)
        logits = (cfg.logit_scale * scores.float()).masked_fill(~valid, float("-inf"))
        if cfg.smf_target == "official":  # CrossEn's diagonal: rows 0..3, row j against candidate j
            rows = torch.arange(min(b, logits.shape[1]), device=logits.device)
            rows = rows[valid[rows, rows]]
            return -F.log_softmax(logits, dim=-1)[rows, rows].mean()
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
