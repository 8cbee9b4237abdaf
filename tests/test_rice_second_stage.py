"""RICE's second stage: clip-anchored PMD training, the fused score, and its weight chosen on
training pairs held out before training (methods/rice_pmd.py, benchmark/evaluation/rerank_fusion.py)."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from benchmark.core.config import EvalConfig
from benchmark.evaluation import rerank_fusion as rf
from datasets.records import ClipSource, DatasetSplits, TrainPair
from methods.losses import hardest_negatives
from methods.pmd import PairwiseMatchingDecoder
from methods.rice import Rice, RiceConfig, _Side
from methods.rice_pmd import pmd_local, pmd_losses
from tests.rice_fixtures import one_thread, small_rice, toy_batch  # noqa: F401 (autouse fixture)


def _capture(m):
    calls = []
    m.pmd.register_forward_hook(lambda mod, args, kwargs, out: calls.append((args, kwargs, out)), with_kwargs=True)
    return calls


def test_clip_anchored_pmd_ranks_each_clip_against_its_hardest_images() -> None:
    torch.manual_seed(0)
    m = small_rice(ipd="none", pfr=False, text=False, pmd_anchor="clip")
    batch = toy_batch(b=6)
    batch["product"] = torch.tensor([0, 1, 2, 3, 4, 1])  # images 1 and 5 show the same product
    calls = _capture(m)
    losses = m.training_losses(batch)
    assert set(losses) == {"icl", "pmd_clip"}
    (queries, q_keep, keys, k_keep), kwargs, (scores, _) = calls[0]
    with torch.no_grad():
        video, image = m._video_side(batch, train=True), m._image_side(batch)
    sim = video.embedding @ image.embedding.t()
    exclude = batch["product"][:, None] == batch["product"][None, :]
    neg, valid = hardest_negatives(sim, torch.arange(6), 3, exclude)
    assert kwargs["key_index"].tolist() == torch.arange(6).repeat_interleave(4).tolist()  # one clip per softmax
    cand = kwargs["query_index"].view(6, 4)
    assert cand[:, 0].tolist() == list(range(6))  # column 0: the clip's own image
    assert torch.equal(cand[:, 1:][valid], neg[valid])
    assert 5 not in cand[1, 1:][valid[1]].tolist()  # same product is no negative
    logits = (
        scores.detach()
        .view(6, 4)
        .masked_fill(~torch.cat([torch.ones(6, 1, dtype=torch.bool), valid], 1), float("-inf"))
    )
    assert float(losses["pmd_clip"].detach()) == pytest.approx(
        float(F.cross_entropy(logits, torch.zeros(6, dtype=torch.long))), rel=1e-5
    )


def test_negatives_from_the_clips_own_livestream_come_first() -> None:
    torch.manual_seed(0)
    m = small_rice(ipd="none", pfr=False, text=False, pmd_anchor="clip", num_negatives=2)
    batch = toy_batch(b=6)
    batch["live"] = torch.tensor([0, 0, 0, 1, 1, 1])
    calls = _capture(m)
    m.training_losses(batch)
    cand = calls[0][1]["query_index"].view(6, 3)
    for i in range(6):
        assert {int(c) // 3 for c in cand[i]} == {i // 3}  # the two negatives share the clip's livestream


W, PRODUCTS, TOKENS, FRAMES = 32, 6, 5, 2


def _toy_pmd_trained(anchor: str, steps: int = 100):
    """A toy problem: product p's image and clip tokens share a random signature, each with its
    own noise; PMD alone (no encoder) learns from ``pmd_losses`` with uninformative ICL
    embeddings, so only PMD's matching can find the pairs."""
    torch.manual_seed(0)
    sig = torch.randn(PRODUCTS, TOKENS, W)
    images = lambda: sig + 0.5 * torch.randn(PRODUCTS, TOKENS, W)  # noqa: E731
    clips = lambda: sig.repeat(1, FRAMES, 1) + 0.5 * torch.randn(PRODUCTS, FRAMES * TOKENS, W)  # noqa: E731
    pmd = PairwiseMatchingDecoder(ResidualAttentionBlock(W, 4), ResidualAttentionBlock(W, 4), heads=4, attn_dropout=0.0)
    model = types.SimpleNamespace(
        cfg=RiceConfig(pmd_anchor=anchor, num_negatives=PRODUCTS - 1, pfr=False), pmd=pmd, pfr=None
    )
    opt = torch.optim.Adam(pmd.parameters(), lr=1e-3)
    keep_i = torch.ones(PRODUCTS, TOKENS, dtype=torch.bool)
    keep_c = torch.ones(PRODUCTS, FRAMES * TOKENS, dtype=torch.bool)
    for _ in range(steps):
        emb = F.normalize(torch.randn(PRODUCTS, 8), dim=-1)
        video, image, product = (
            _Side(emb, clips(), keep_c, {}),
            _Side(emb, images(), keep_i, {}),
            torch.arange(PRODUCTS),
        )
        everyone = {"video": emb, "image": emb, **pmd_local(model, video, image, product, None)}  # one process
        losses = pmd_losses(model, video, image, product, None, everyone)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return pmd.eval(), images, clips, keep_i, keep_c


def test_a_clip_anchored_pmd_ranks_a_fixed_clips_positive_image_first() -> None:
    pmd, images, clips, keep_i, keep_c = _toy_pmd_trained("clip")
    with torch.no_grad():
        for c in range(PRODUCTS):  # each clip, fresh noise, against every image at once
            img, clp = images(), clips()
            scores, _ = pmd(
                img, keep_i, clp[c : c + 1], keep_c[c : c + 1], key_index=torch.zeros(PRODUCTS, dtype=torch.long)
            )
            assert int(scores.argmax()) == c, (c, scores)


def test_fused_rerank_adds_the_weighted_pmd_cosine_to_the_first_stage() -> None:
    torch.manual_seed(0)
    m = small_rice(ipd="oracle").eval()
    batch = toy_batch(b=4)
    with torch.no_grad():
        q, g = m.encode_query(batch), m.encode_gallery(batch)
        pmd = m.rerank(q, g)
        cos = (F.normalize(q.embedding, dim=-1) * F.normalize(g.embedding, dim=-1)).sum(-1)
        m.cfg = dataclasses.replace(m.cfg, rerank_score="fused")
        assert m.needs_rerank_validation
        with pytest.raises(RuntimeError, match="rerank_fuse_weight"):
            m.rerank(q, g)
        m.cfg = dataclasses.replace(m.cfg, rerank_fuse_weight=0.5)
        assert not m.needs_rerank_validation
        assert torch.allclose(m.rerank(q, g), cos + 0.5 * pmd / m.cfg.match_scale, atol=1e-5)
        m.cfg = dataclasses.replace(m.cfg, rerank_fuse_weight=0.0)
        assert torch.allclose(m.rerank(q, g), cos, atol=1e-6)


# --- benchmark.evaluation.rerank_fusion ----------------------------------------------------------------


def _pair(live: str, k: int, product: str) -> TrainPair:
    clip = ClipSource(clip_id=f"{live}-{1000 * k}-{1000 * k + 900}", frame_paths=(Path(f"/f/{live}-{k}.jpg"),))
    return TrainPair(clip=clip, image_id=f"img-{product}", image_path=Path(f"/i/{product}.jpg"), product_id=product)


def _splits(grouped: bool = True) -> DatasetSplits:
    lives = [f"aaaaaaaa-bbbb-cccc-dddd-{i:012d}" for i in range(10)]
    train = [_pair(lv, k, f"{i}-{k % 3}") for i, lv in enumerate(lives) for k in range(4)]
    return DatasetSplits(
        name="toy", root=Path("/"), train=train, queries=[], gallery=[], annotation_checksum="x", grouped=grouped
    )


def test_validation_holds_out_whole_livestreams_and_trains_on_none_of_them() -> None:
    splits = _splits()
    rest, val = rf.carve_validation(splits, fraction=0.2, seed=0)
    held = {q.group for q in val.queries}
    assert len(held) == 2 and all(len(g) == 36 for g in held)  # live ids: the clip id minus start/end
    assert not {rf.livestream_of(p) for p in rest.train} & held
    assert len(rest.train) + len(val.queries) == len(splits.train)
    assert {g.image_id for g in val.gallery}.isdisjoint(p.image_id for p in rest.train)
    for q in val.queries:  # each query's gallery is its livestream's images, its own among them
        assert q.gt_ids[0] in {g.image_id for g in val.gallery if g.group == q.group}
    assert rf.carve_validation(splits, 0.2, 0)[1].queries == val.queries  # deterministic
    assert len({q.group for q in rf.carve_validation(splits, fraction=0.5, max_pairs=4)[1].queries}) == 1  # capped
    _, flat = rf.carve_validation(_splits(grouped=False), fraction=0.2)
    assert all(q.group is None for q in flat.queries)


def test_fused_r1_and_the_weight_scan() -> None:
    cos = [torch.tensor([0.9, 0.8]), torch.tensor([0.7, 0.6]), torch.tensor([0.5, 0.4])]
    second = [torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.5])]
    gt = [torch.tensor([False, True]), torch.tensor([True, False]), torch.tensor([True, False])]
    assert rf.fused_r1(cos, second, gt, 0.0) == pytest.approx(200 / 3)  # first stage: queries 2 and 3
    assert rf.fused_r1(cos, second, gt, 0.5) == pytest.approx(200 / 3)  # 0.9 < 1.3 flips query 1, 0.5 < 0.65 query 3
    assert rf.fused_r1(cos, second, gt, 0.15) == pytest.approx(100.0)


def test_choose_fuse_weight_picks_a_weight_on_the_validation_split(monkeypatch) -> None:
    from benchmark.evaluation import evaluate
    from benchmark.training.distributed import DistEnv
    from methods.base import Encoded

    splits = _splits()
    _, val = rf.carve_validation(splits, fraction=0.3, seed=1)
    gpos = {g.image_id: j for j, g in enumerate(val.gallery)}
    truth = torch.tensor([gpos[q.gt_ids[0]] for q in val.queries])
    torch.manual_seed(0)
    q_emb, g_emb = (
        F.normalize(torch.randn(len(val.queries), 8), dim=-1),
        F.normalize(torch.randn(len(val.gallery), 8), dim=-1),
    )

    def fake_extract(method, dataset, side, **kw):
        n = len(dataset)
        emb = q_emb if side == "query" else g_emb
        return Encoded(emb[:n], {"row": torch.arange(n).float()[:, None]})

    monkeypatch.setattr(evaluate, "extract", fake_extract)
    method = types.SimpleNamespace(
        cfg=RiceConfig(rerank_score="fused"),
        eval=lambda: None,
        second_stage_scores=lambda q, g: (truth[q.extras["row"][:, 0].long()] == g.extras["row"][:, 0].long()).float(),
    )
    choice = rf.choose_fuse_weight(method, val, None, EvalConfig(rerank_topk=3, batch_size=5), env=DistEnv())
    assert choice.queries == len(val.queries) and choice.r1_by_weight[0.0] == choice.r1_first_stage
    # a perfect second stage: any weight > 2 (twice the cosine's range) finds every ground truth in the top 3
    in_top3 = sum(
        int(
            truth[i]
            in sorted(
                [j for j, g in enumerate(val.gallery) if g.group == q.group], key=lambda j: -float(q_emb[i] @ g_emb[j])
            )[:3]
        )
        for i, q in enumerate(val.queries)
    )
    assert choice.r1_by_weight[3.0] == pytest.approx(100.0 * in_top3 / len(val.queries))
    assert choice.r1_second_stage == pytest.approx(choice.r1_by_weight[3.0])
    assert choice.r1_by_weight[choice.weight] == max(choice.r1_by_weight.values())
    assert choice.weight == min(w for w, r in choice.r1_by_weight.items() if r == max(choice.r1_by_weight.values()))
    m = types.SimpleNamespace(cfg=RiceConfig(rerank_score="fused"))
    m.set_rerank_fuse_weight = lambda w: Rice.set_rerank_fuse_weight(m, w)  # the method's own hook
    rf.apply_choice(m, choice)
    assert m.cfg.rerank_fuse_weight == choice.weight
