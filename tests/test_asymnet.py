"""AsymNet (tiny and paper profiles): the loss falls on a fixed toy batch, embedding shapes,
the paper's sizes (built on the meta device), one set of BatchNorm statistics per side, the
mixture-of-experts tree, the training phases, the re-ranker, a tiny run through the CLI.
"""

from __future__ import annotations

import pytest
import torch

from methods.asymnet import AsymNet, phase_for_epoch, tree_fuse
from methods.backbones import count_parameters
from methods.base import build_method
from methods.domain_norm import DomainBatchNorm
from tests.baseline_fixtures import (
    check_embedding_shapes,
    check_tiny_cli_run,
    check_tiny_training_loss_falls,
    cnn_batch,
    cnn_info,
    paper_model,
    registered_on_one_thread,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from registered_on_one_thread()


def test_tiny_training_loss_falls_on_a_fixed_batch():
    check_tiny_training_loss_falls("asymnet", {})


def test_embeddings_have_the_declared_shapes():
    check_embedding_shapes("asymnet", {})


def test_paper_asymnet_sizes():
    m = paper_model(AsymNet)
    assert count_parameters(m.image_net.trunk) == 14_714_688  # VGG-16 convs, pool5 replaced by SPP
    assert m.image_net.fc[0].in_features == 512 * (1 + 4 + 16)
    lstm_layer = 4 * 1024 * (1024 + 1024) + 2 * 4 * 1024
    assert count_parameters(m.lstm) == 2 * lstm_layer
    assert len(m.gates) == 4  # 10 frames -> 16 leaves -> 4 fusion levels


def test_vgg_baselines_normalise_frames_and_shop_images_in_training_as_at_test():
    """asymnet's tiny VGG keeps one set of statistics per side and updates each once per step, and
    encodes each side on its own statistics at test."""
    method = build_method(AsymNet, "tiny", cnn_info())
    method.train()
    batch = cnn_batch(b=4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in method.modules())
    bn = next(m for m in method.modules() if isinstance(m, DomainBatchNorm))
    method.training_losses(batch)
    assert bn.num_batches_tracked.tolist() == [1, 1]
    assert not torch.allclose(bn.running_mean[0], bn.running_mean[1])
    method.eval()
    with torch.no_grad():
        g = method.encode_gallery(batch).embedding
        for m in method.modules():
            if isinstance(m, DomainBatchNorm):
                m.running_mean[1].copy_(m.running_mean[0])
                m.running_var[1].copy_(m.running_var[0])
        assert not torch.allclose(method.encode_gallery(batch).embedding, g)  # shop statistics were used


def test_tree_fusion_with_uniform_gates_averages_leaves_and_skips_masked_ones():
    gates = torch.nn.ModuleList(torch.nn.Linear(2, 1) for _ in range(2))
    for g in gates:
        torch.nn.init.zeros_(g.weight)
        torch.nn.init.zeros_(g.bias)
    p = torch.tensor([[0.9, 0.5, 0.2, 0.4]])
    logit, reps = torch.logit(p), torch.randn(1, 4, 2)
    full = tree_fuse(logit, reps, torch.ones(1, 4, dtype=torch.bool), gates).exp()
    torch.testing.assert_close(full, p.mean(1, keepdim=True).view(1))
    # 3 leaves (padded to 4): root = 1/2 * mean(p1, p2) + 1/2 * p3
    three = tree_fuse(logit[:, :3], reps[:, :3], torch.ones(1, 3, dtype=torch.bool), gates).exp()
    torch.testing.assert_close(three, torch.tensor([0.5 * 0.7 + 0.5 * 0.2]))
    masked = tree_fuse(logit, reps, torch.tensor([[True, True, True, False]]), gates).exp()
    torch.testing.assert_close(masked, three)
    with pytest.raises(ValueError, match="fusion levels"):
        tree_fuse(torch.zeros(1, 5), torch.zeros(1, 5, 2), torch.ones(1, 5, dtype=torch.bool), gates)


def test_asymnet_phases_follow_the_epoch_schedule_and_freeze_what_they_should():
    assert [phase_for_epoch((0.4, 0.2, 0.4), e, 10) for e in range(10)] == ["leaves"] * 4 + ["fusion"] * 2 + [
        "both"
    ] * 4
    assert [phase_for_epoch(AsymNet.default_config("tiny").phases, e, 4) for e in range(4)] == [
        "both"
    ] * 4  # tiny: joint
    torch.manual_seed(0)
    m = build_method(AsymNet, "tiny", cnn_info(), {"phases": "0.4,0.2,0.4"})  # the paper's phases at tiny sizes
    batch = cnn_batch(b=4)
    expected = {"leaves": {"leaf", "embed"}, "fusion": {"fused"}, "both": {"leaf", "embed", "fused"}}
    for epoch, phase in ((0, "leaves"), (4, "fusion"), (9, "both")):
        m.on_epoch_start(epoch, 10)
        assert m.phase == phase
        m.zero_grad(set_to_none=True)
        losses = m.training_losses(batch)
        assert set(losses) == expected[phase]
        sum(losses.values()).backward()
        grads = {n.split(".")[0] for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if phase == "leaves":
            assert "gates" not in grads and {"image_net", "lstm", "leaf_hidden"} <= grads
        elif phase == "fusion":
            assert grads == {"gates"}
        else:
            assert {"gates", "image_net", "lstm", "leaf_hidden", "leaf_out"} <= grads


def test_asymnet_rerank_scores_each_pair_independently_of_the_batch():
    torch.manual_seed(0)
    m = build_method(AsymNet, "tiny", cnn_info()).eval()
    batch = cnn_batch(b=3)
    with torch.no_grad():
        q, g = m.encode_query(batch), m.encode_gallery(batch)
        qi = torch.tensor([0, 0, 1, 2, 2])
        gi = torch.tensor([0, 2, 1, 0, 1])
        scores = m.rerank(q.select(qi), g.select(gi))
        assert scores.shape == (5,) and (scores <= 0).all()
        for k in range(5):
            alone = m.rerank(q.select(qi[k : k + 1]), g.select(gi[k : k + 1]))
            torch.testing.assert_close(scores[k : k + 1], alone)
    assert AsymNet.supports_rerank


@pytest.mark.slow
def test_tiny_train_and_evaluate_through_the_cli(tmp_path, synth_lpr4m, capsys):
    check_tiny_cli_run("asymnet", ["--rerank", "all"], "asymnet-train.batch_size-8", tmp_path, synth_lpr4m, capsys)
