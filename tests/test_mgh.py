"""MGH (tiny and paper profiles): the loss falls on a fixed toy batch, embedding shapes, the
paper's three temporal ranges and the released model (built on the meta device), per-side
BatchNorm statistics, the hypergraph layers (neighbours, ranges, gradient), the non-local
blocks learn, the mutual-information estimate, a tiny run through the CLI.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from methods.backbones import count_parameters
from methods.base import build_method
from methods.mgh import MGH, HypergraphLayer, jsd_mutual_information, temporal_neighbour_mask
from tests.baseline_fixtures import (
    check_embedding_shapes,
    check_nonlocal_blocks_learn,
    check_per_side_statistics_and_shared_bnneck,
    check_tiny_cli_run,
    check_tiny_training_loss_falls,
    cnn_batch,
    cnn_info,
    encode_with,
    nonlocal_params,
    one_step,
    paper_model,
    registered_on_one_thread,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from registered_on_one_thread()


def test_tiny_training_loss_falls_on_a_fixed_batch():
    check_tiny_training_loss_falls("mgh", {})


def test_embeddings_have_the_declared_shapes():
    check_embedding_shapes("mgh", {})


def test_paper_mgh_has_three_temporal_ranges_and_the_released_model_a_5120_d_embedding():
    m = paper_model(MGH)
    assert m.cfg.windows == (1, 2, 3)
    assert count_parameters(m.encoder) == 23_508_032
    assert m.nl_at == {1: [1, 3], 2: [1, 3, 5]}  # every second block, as the official ResNetNonLocal
    assert count_parameters(m.nonlocal_blocks) == 2 * nonlocal_params(512) + 3 * nonlocal_params(1024)
    # the code's multi-range layout: (1 + 3 ranges) x 512 per layer, bnneck 2048 + 3 x 4 x 512
    assert m.embed_dim == 8192 and m.dims == [2048, 2048, 2048, 2048]
    layer1, layer2 = m.branches[0].layers
    assert count_parameters(layer1) == 2 * (2048 * 512 + 512) + 2 * 2048  # W_x, shared W_n, BN
    assert count_parameters(layer2) == 2 * (2048 * 512 + 512) + 2 * 2048
    released = paper_model(MGH, windows="3")  # one range, +-3 frames: the released model
    assert released.embed_dim == 5120 and released.dims == [2048, 1024, 1024, 1024]
    assert [fc.weight.shape for fc in released.classifiers] == [(1000, 2048)] + [(1000, 1024)] * 3
    layer1, layer2 = released.branches[0].layers
    assert count_parameters(layer1) == 2 * (2048 * 512 + 512) + 2 * 1024
    assert count_parameters(layer2) == 2 * (1024 * 512 + 512) + 2 * 1024
    assert [b.parts for b in m.branches] == [2, 4, 8]
    assert MGH.default_config("tiny").windows == (3,)  # what the committed tiny rows trained


def test_reid_baselines_keep_per_side_statistics_and_a_shared_bnneck():
    check_per_side_statistics_and_shared_bnneck("mgh")


def test_hypergraph_neighbours_are_the_nearest_nodes_inside_the_temporal_window():
    allowed = temporal_neighbour_mask(frames=6, parts=2, window=1, device=torch.device("cpu"))
    assert allowed[0].nonzero().view(-1).tolist() == [1, 2, 3]  # frame 0: its other stripe + frame 1
    assert not allowed.diagonal().any()
    layer = HypergraphLayer(in_dim=3, hidden=2, knn=3, windows=(1,)).eval()
    with torch.no_grad():
        layer.W_x.weight.zero_()
        layer.W_x.bias.zero_()
        layer.W_n.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
        layer.W_n.bias.zero_()
    # 3 frames x 1 part, window 1: node 0 may only use node 1 although node 2 is closer to it;
    # node 1 picks the closer of nodes 0 and 2; the edge window (2 nodes) fixes one neighbour each
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.2]]])
    out = layer(x, frames=3, parts=1)
    neigh = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])  # W_n of x1, x2, x1
    h = F.relu(F.normalize(torch.cat([torch.zeros(3, 2), neigh], 1), dim=-1))
    torch.testing.assert_close(out[0], layer.bn(h))


def test_hypergraph_layer_has_one_hyperedge_per_temporal_range():
    """windows (1, 3): each node gets the neighbour mean of each range, concatenated after W_x x
    and projected by the same W_n; 4 frames x 1 part, knn 2 (one neighbour per range)."""
    layer = HypergraphLayer(in_dim=2, hidden=2, knn=2, windows=(1, 3)).eval()
    assert layer.out_dim == 6 and layer.bn.num_features == 6
    with torch.no_grad():
        layer.W_x.weight.zero_()
        layer.W_x.bias.zero_()
        layer.W_n.weight.copy_(torch.eye(2))
        layer.W_n.bias.zero_()
    # node 0 is nearest to node 3 (3 frames away), then to node 1 (1 frame away)
    x = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [1.0, 0.1]]])
    assert layer.neighbour_mean(x, 4, 1, 1)[0, 0].tolist() == x[0, 1].tolist()  # range 1: frame 1 only
    assert layer.neighbour_mean(x, 4, 1, 3)[0, 0].tolist() == x[0, 3].tolist()  # range 3: the nearest, frame 3
    out = layer(x, frames=4, parts=1)
    h0 = F.relu(F.normalize(torch.cat([torch.zeros(2), x[0, 1], x[0, 3]]), dim=0))
    torch.testing.assert_close(out[0, 0], layer.bn(h0[None, :, None])[0, :, 0])
    with pytest.raises(ValueError, match="windows"):
        HypergraphLayer(in_dim=2, hidden=2, knn=2, windows=())


def test_nonlocal_blocks_learn_from_identity_and_change_the_embedding():
    check_nonlocal_blocks_learn("mgh", {})


def test_hypergraph_neighbours_receive_gradient_and_shape_the_embedding():
    """MGH's propagation layers: W_n (the hyperedge term) gets gradient on the first step, and
    replacing every neighbour mean by zeros changes the embedding before and after it."""
    torch.manual_seed(0)
    method = build_method(MGH, "tiny", cnn_info())
    layers = [m for m in method.modules() if isinstance(m, HypergraphLayer)]
    assert len(layers) == 2 * len(method.branches)
    batch = cnn_batch()

    @contextlib.contextmanager
    def zero_neighbours():
        saved = HypergraphLayer.neighbour_mean
        HypergraphLayer.neighbour_mean = lambda self, x, *a: torch.zeros_like(x)
        try:
            yield
        finally:
            HypergraphLayer.neighbour_mean = saved

    assert (encode_with(method, batch) - encode_with(method, batch, zero_neighbours())).abs().max() > 1e-4
    grads = one_step(method, batch)
    for layer in layers:
        name = next(n for n, p in method.named_parameters() if p is layer.W_n.weight)
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert (encode_with(method, batch) - encode_with(method, batch, zero_neighbours())).abs().max() > 1e-4


def test_mi_estimate_is_zero_for_an_uninformative_critic_and_grows_with_matching():
    assert abs(float(jsd_mutual_information(torch.zeros(5, 5)))) < 1e-6
    informative = torch.full((5, 5), -5.0) + 10.0 * torch.eye(5)
    assert float(jsd_mutual_information(informative)) > 1.0


@pytest.mark.slow
def test_tiny_train_and_evaluate_through_the_cli(tmp_path, synth_lpr4m, capsys):
    check_tiny_cli_run("mgh", [], "mgh-train.batch_size-8", tmp_path, synth_lpr4m, capsys)
