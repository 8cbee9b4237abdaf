"""PMD layers, PFR and hardest-negative selection (methods/pmd.py)."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock

from methods.losses import hardest_negatives
from methods.pmd import AttentionLayer, PairwiseMatchingDecoder, PatchFeatureReconstruction, consecutive_runs, pfr_loss
from tests.rice_fixtures import one_thread  # noqa: F401 (autouse fixture)


def _block(width: int = 32, heads: int = 4, seed: int = 0) -> ResidualAttentionBlock:
    torch.manual_seed(seed)
    block = ResidualAttentionBlock(width, heads)
    for p in block.parameters():  # non-trivial norms and biases
        torch.nn.init.normal_(p, std=0.2)
    return block.eval()


def test_hardest_negatives_picks_top_similar_non_positive() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.3, 0.7], [0.2, 0.5, 0.1, 0.6, 0.4], [0.3, 0.9, 0.2, 0.1, 0.0]])
    idx, valid = hardest_negatives(sim, torch.tensor([0, 1, 2]), 3)
    assert idx.tolist() == [[2, 4, 3], [3, 4, 0], [1, 0, 3]]
    assert bool(valid.all())
    # excluding same-product columns moves to the next hardest
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[0, 2] = True
    idx, _ = hardest_negatives(sim, torch.tensor([0, 1, 2]), 3, exclude)
    assert idx[0].tolist() == [4, 3, 1]
    # positives at an offset (a second process's rows) are excluded by column
    idx, _ = hardest_negatives(sim[:2], torch.tensor([3, 4]), 2)
    assert idx.tolist() == [[0, 2], [3, 1]]


def test_hardest_negatives_flags_missing_negatives() -> None:
    sim = torch.tensor([[0.5, 0.2], [0.1, 0.7]])
    idx, valid = hardest_negatives(sim, torch.tensor([0, 1]), 3)
    assert idx.shape == (2, 2)
    assert valid.tolist() == [[True, False], [True, False]]
    assert idx[:, 0].tolist() == [1, 0]


def test_self_layer_copied_from_block_reproduces_it() -> None:
    block = _block()
    layer = AttentionLayer(block, heads=4).eval()
    x = torch.randn(3, 7, 32)
    keep = torch.ones(3, 7, dtype=torch.bool)
    ref = block(x)
    out_fast, _ = layer(x, keep)
    out_slow, w = layer(x, keep, need_weights=True)
    assert torch.allclose(out_fast, ref, atol=1e-5)
    assert torch.allclose(out_slow, ref, atol=1e-5)
    assert w.shape == (3, 4, 7, 7)
    assert torch.allclose(w.sum(-1), torch.ones(3, 4, 7), atol=1e-5)


def test_heads_can_differ_from_the_block() -> None:
    block = _block(heads=4)
    layer = AttentionLayer(block, heads=2).eval()
    x = torch.randn(2, 5, 32)
    out, w = layer(x, torch.ones(2, 5, dtype=torch.bool), need_weights=True)
    assert w.shape == (2, 2, 5, 5)
    assert not torch.allclose(out, block(x), atol=1e-4)  # different head split, different function


def _decoder() -> PairwiseMatchingDecoder:
    return PairwiseMatchingDecoder(_block(seed=1), _block(seed=2), heads=4, attn_dropout=0.1).eval()


@torch.no_grad()
def test_masked_keys_do_not_change_scores_and_paths_agree() -> None:
    torch.manual_seed(0)
    pmd = _decoder()
    q, k = torch.randn(3, 6, 32), torch.randn(3, 10, 32)
    q_keep = torch.ones(3, 6, dtype=torch.bool)
    k_keep = torch.ones(3, 10, dtype=torch.bool)
    k_keep[:, 7:] = False
    s_fast, _ = pmd(q, q_keep, k, k_keep)
    s_slow, w = pmd(q, q_keep, k, k_keep, need_weights=True)
    assert torch.allclose(s_fast, s_slow, atol=1e-5)
    assert float(w[..., 7:].abs().max()) == 0.0
    k2 = k.clone()
    k2[:, 7:] = torch.randn(3, 3, 32) * 10
    assert torch.allclose(pmd(q, q_keep, k2, k_keep)[0], s_fast, atol=1e-5)
    assert bool((s_fast.abs() <= 10.0 + 1e-5).all())  # 10 x cosine
    # a pair with no key left (a missing clip) still scores finitely
    none = torch.zeros(3, 10, dtype=torch.bool)
    assert bool(torch.isfinite(pmd(q, q_keep, k, none)[0]).all())


def test_pfr_gradients_skip_the_detached_tokens() -> None:
    torch.manual_seed(0)
    head = PatchFeatureReconstruction(heads=4)
    attn = torch.rand(2, 4, 5, 9).softmax(-1).requires_grad_(True)
    video = torch.randn(2, 9, 8, requires_grad=True)
    image = torch.randn(2, 5, 8, requires_grad=True)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[1, 6:] = False
    weights = head(attn, keep, head_dim=8)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 5), atol=1e-5)
    assert float(weights.detach()[1, :, 6:].max()) == 0.0
    loss = pfr_loss(weights, video, image)
    loss.backward()
    assert video.grad is None and image.grad is None
    assert attn.grad is not None and float(attn.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in head.parameters())
    expected = ((weights.detach() @ video.detach() - image.detach()) ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_pfr_layernorm_target_ignores_the_tokens_scale() -> None:
    """raw: the MSE grows with the tokens' square scale; layernorm: the same loss at any scale."""
    torch.manual_seed(0)
    weights = torch.rand(2, 5, 9).softmax(-1)
    video, image = torch.randn(2, 9, 8) + 0.5, torch.randn(2, 5, 8)
    raw = [float(pfr_loss(weights, video * s, image * s)) for s in (1.0, 4.0)]
    ln = [float(pfr_loss(weights, video * s, image * s, target="layernorm")) for s in (1.0, 4.0)]
    assert raw[1] == pytest.approx(16 * raw[0], rel=1e-5)
    assert ln[1] == pytest.approx(ln[0], rel=1e-4) and ln[0] != pytest.approx(raw[0], rel=1e-2)
    ln_v = torch.nn.functional.layer_norm(video, (8,))
    ln_i = torch.nn.functional.layer_norm(image, (8,))
    assert ln[0] == pytest.approx(float(((weights @ ln_v - ln_i) ** 2).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="pfr target must be one of"):
        pfr_loss(weights, video, image, target="l2")


def test_pfr_head_starts_as_the_official_ones_init() -> None:
    head = PatchFeatureReconstruction(heads=8)
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [8, 4] and [c.out_channels for c in convs] == [4, 1]
    assert all(bool((c.weight == 1).all()) and bool((c.bias == 0).all()) for c in convs)


@torch.no_grad()
def test_shared_keys_by_index_equal_per_pair_keys() -> None:
    torch.manual_seed(0)
    pmd = _decoder()
    clips, clip_keep = torch.randn(3, 10, 32), torch.rand(3, 10) > 0.3
    index = torch.tensor([2, 0, 0, 1, 2, 2])
    q, q_keep = torch.randn(6, 6, 32), torch.ones(6, 6, dtype=torch.bool)
    per_pair, w1 = pmd(q, q_keep, clips[index], clip_keep[index], need_weights=True)
    shared, w2 = pmd(q, q_keep, clips, clip_keep, need_weights=True, key_index=index)
    assert torch.allclose(per_pair, shared, atol=1e-5) and torch.allclose(w1, w2, atol=1e-6)
    assert torch.allclose(pmd(q, q_keep, clips, clip_keep, key_index=index)[0], per_pair, atol=1e-5)
    # images shared by index too (the self-attention runs once per image)
    images = torch.randn(2, 6, 32)
    img_index = torch.tensor([1, 1, 0, 0, 1, 0])
    per_pair, _ = pmd(images[img_index], q_keep, clips[index], clip_keep[index])
    both, _ = pmd(images, q_keep[:2], clips, clip_keep, key_index=index, query_index=img_index)
    assert torch.allclose(both, per_pair, atol=1e-5)


def test_consecutive_runs_collapse_repeated_rows() -> None:
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    tokens = torch.stack([a, a, b, b, b, a])
    keep = torch.ones(6, 4, dtype=torch.bool)
    keep[4, 0] = False  # same tokens, different mask: a new run
    first, run = consecutive_runs(tokens, keep)
    assert first.tolist() == [0, 2, 4, 5] and run.tolist() == [0, 0, 1, 1, 2, 3]
    one_first, one_run = consecutive_runs(tokens[:1], keep[:1])
    assert one_first.tolist() == [0] and one_run.tolist() == [0]
