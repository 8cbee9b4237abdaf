"""SGMN against reference computations written from the official code's equations.

Each reference below is rebuilt here from Huxiaowan/SGMN (4c1644f) with the model's own weights
(shared), not through the model's private helpers: the temporal difference block
(``modeling_sgmn.temporal_difference_block`` + ``_temporal_difference_block_tdb``: interleave by
``index_select``, additive -1e6 key masks), the one-stage score (``get_similarity_logits``:
``contrastive_logit = cos(video, image) + 0.5 cos(fc_asr(a), fc_title(t))``), the hard
negatives (``_cross_similarity``: per image, the 3 highest-scored other clips) and the
frame-level matching (``mca.AdjacencyLearning`` with the image fed as K identical words).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.base import DataInfo, build_method
from methods.sgmn import Sgmn
from methods.sgmn_graph import FrameLevelMatching
from tests.rice_fixtures import one_thread, toy_batch  # noqa: F401 (autouse fixture)

SMALL = {
    "encoder.width": 64,
    "encoder.layers": 2,
    "encoder.heads": 2,
    "encoder.embed_dim": 32,
    "encoder.text_width": 32,
    "encoder.text_layers": 1,
    "encoder.text_heads": 2,
    "encoder.context_length": 16,
}


def small_sgmn(num_frames: int = 3, **overrides: Any) -> Sgmn:
    torch.manual_seed(0)
    info = DataInfo(num_products=50, num_categories=4, num_frames=num_frames, image_size=112)
    model = build_method(Sgmn, "tiny", info, {**SMALL, **overrides})
    return model.eval()


def ref_block(block: Any, x: Tensor, keep: Tensor) -> Tensor:
    """CLIP's ``ResidualAttentionBlock`` with the official additive mask (-1e6 on padded keys)."""
    attn = block.attn
    n, length, d = x.shape
    h = attn.num_heads
    y = F.layer_norm(x, (d,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    q, k, v = (y @ attn.in_proj_weight.t() + attn.in_proj_bias).split(d, dim=-1)
    q, k, v = (z.view(n, length, h, d // h).transpose(1, 2) for z in (q, k, v))
    logits = q @ k.transpose(-1, -2) / (d // h) ** 0.5 + ((1.0 - keep.float()) * -1e6)[:, None, None, :]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(n, length, d)
    x = x + out @ attn.out_proj.weight.t() + attn.out_proj.bias
    y = F.layer_norm(x, (d,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
    return x + block.mlp(y)


def ref_tdb(tdb: Any, frames: Tensor, mask: Tensor) -> Tensor:
    """``_temporal_difference_block_tdb`` (``temporal_proj='sigmoid_selfA'``), official order."""
    b, t, d = frames.shape
    pos = tdb.frame_position.weight[:t].expand(b, t, d)
    frame_type = tdb.type_embedding.weight[1].expand(b, t, d)
    diff_type = tdb.type_embedding.weight[0].expand(b, t, d)
    diff = frames[:, 1:] - frames[:, :-1] + pos[:, 1:]
    diff = ref_block(tdb.difference_attention, diff, mask[:, 1:])
    ln = tdb.difference_norm
    diff = 2 * torch.sigmoid(F.layer_norm(diff, (d,), ln.weight, ln.bias, ln.eps)) - 1
    middle = torch.cat([frames, diff], 1)
    order = [i for j in range(t - 1) for i in (j, t + j)] + [t - 1]
    idx = torch.tensor(order)
    z = middle.index_select(1, idx) + torch.cat([pos, pos], 1).index_select(1, idx)
    z = z + torch.cat([frame_type, diff_type], 1).index_select(1, idx)
    keep = torch.cat([mask, mask], 1).index_select(1, idx)
    for block in tdb.blocks:
        z = ref_block(block, z, keep)
    return z[:, 0::2] + frames


@torch.no_grad()
def test_temporal_difference_block_is_the_official_construction() -> None:
    model = small_sgmn(num_frames=4)
    torch.manual_seed(1)
    frames = torch.randn(3, 4, 32)
    mask = torch.ones(3, 4, dtype=torch.bool)
    torch.testing.assert_close(
        model.temporal(frames, mask), ref_tdb(model.temporal, frames, mask), rtol=1e-5, atol=1e-5
    )


def ref_sides(model: Sgmn, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Official embeddings: CLIP's image encoder (CLS -> ln_post -> proj), TDB, masked mean."""
    visual = model.encoder.visual
    b, t = batch["frames"].shape[:2]
    mask = batch["frame_mask"]
    frames = visual(batch["frames"].flatten(0, 1)).view(b, t, -1)
    per_frame = F.normalize(ref_tdb(model.temporal, frames, mask), dim=-1)
    m = mask.float()[..., None]
    video = F.normalize((per_frame * m).sum(1) / m.sum(1), dim=-1)
    image = F.normalize(visual(batch["image"]), dim=-1)
    asr = F.normalize(model.fc_asr(model.encoder.encode_text(batch["asr"])), dim=-1)
    title = F.normalize(model.fc_title(model.encoder.encode_text(batch["title"])), dim=-1)
    return video, image, asr, title


def full_batch(b: int = 6, t: int = 3) -> dict[str, Any]:
    batch = toy_batch(b=b, t=t)
    batch["frame_mask"][:] = True  # the official mask rule and ours agree on unpadded clips
    return batch


@torch.no_grad()
def test_one_stage_score_is_the_official_contrastive_logit() -> None:
    model = small_sgmn()
    batch = full_batch()
    video, image, asr, title = ref_sides(model, batch)
    official = video @ image.t() + 0.5 * asr @ title.t()  # [clips, images]
    q = F.normalize(model.encode_query(batch).embedding, dim=-1)
    g = F.normalize(model.encode_gallery(batch).embedding, dim=-1)
    torch.testing.assert_close(1.5 * q @ g.t(), official, rtol=1e-4, atol=1e-5)


def test_hard_negatives_are_the_official_top3_by_the_full_score() -> None:
    model = small_sgmn()
    batch = full_batch()
    seen: dict[str, Tensor] = {}
    original = model.matcher.forward

    def spy(queries, keys, key_keep, key_index, query_index):  # type: ignore[no-untyped-def]
        seen["key_index"] = key_index.clone()
        return original(queries, keys, key_keep, key_index, query_index)

    model.matcher.forward = spy  # type: ignore[method-assign]
    model.training_losses(batch)  # eval mode: the score has no dropout
    with torch.no_grad():
        video, image, asr, title = ref_sides(model, batch)
        simmat = (video @ image.t() + 0.5 * asr @ title.t()).t()  # _cross_similarity: batch_simmat.T
    order = simmat.sort(descending=True).indices.tolist()
    official = [[i] + [j for j in row if j != i][:3] for i, row in enumerate(order)]
    assert seen["key_index"].view(6, 4).tolist() == official


def ref_frame_matching(fm: FrameLevelMatching, frames: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
    """``AdjacencyLearning.forward``: frames are the regions, each image K identical words."""
    k = fm.topk
    regions = F.normalize(frames, dim=-1)
    t2i, i2t, t2i_mean, i2t_mean = [], [], [], []
    for i in range(images.shape[0]):
        words = F.normalize(images[i].expand(frames.shape[0], k, -1), dim=-1)  # (videos, K, D)
        sim = F.leaky_relu(torch.bmm(words, regions.transpose(1, 2)), negative_slope=0.1)
        row = F.normalize(sim, dim=1).max(dim=2).values  # (videos, K)
        t2i_mean.append(row[:, :k].mean(dim=1))
        t2i.append(row.topk(k, dim=1).values)
        column = F.normalize(sim, dim=2)[:, :k, :].max(dim=1).values  # (videos, T)
        i2t_mean.append(column.mean(dim=1))
        i2t.append(column.topk(k, dim=1).values)
    rel_t2i = fm.mlp_image_to_video(torch.stack(t2i)).squeeze(-1) + torch.stack(t2i_mean)
    rel_i2t = fm.mlp_video_to_image(torch.stack(i2t).transpose(0, 1)).squeeze(-1) + torch.stack(i2t_mean).t()
    return rel_t2i, rel_i2t


@torch.no_grad()
def test_frame_level_matching_is_the_official_adjacency_learning() -> None:
    torch.manual_seed(0)
    fm = FrameLevelMatching(topk=4).eval()
    frames = F.normalize(torch.randn(5, 4, 16), dim=-1)
    images = F.normalize(torch.randn(5, 16), dim=-1)
    i2v, v2i, _, _ = fm(frames, images)
    ref_i2v, ref_v2i = ref_frame_matching(fm, frames, images)
    torch.testing.assert_close(i2v, ref_i2v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v2i, ref_v2i, rtol=1e-5, atol=1e-6)
