"""FashionNet (tiny and paper profiles): the loss falls on a fixed toy batch, embedding shapes,
the paper's VGG-16 without fc8 (built on the meta device: no memory, no weights), one
BatchNorm pass over both sides, the cross-domain triplet's mining, a tiny run through the CLI.
"""

from __future__ import annotations

import math

import pytest
import torch

from methods.backbones import count_parameters
from methods.base import build_method
from methods.fashionnet import FashionNet, cross_domain_triplet
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
    check_tiny_training_loss_falls("fashionnet", {})


def test_embeddings_have_the_declared_shapes():
    check_embedding_shapes("fashionnet", {})


def test_paper_fashionnet_is_vgg16_without_fc8():
    m = paper_model(FashionNet)
    assert count_parameters(m.encoder.features) == 14_714_688  # VGG-16's 13 convolutions
    assert count_parameters(m.encoder) == 134_260_544  # + fc6 (as 7x7 conv) + fc7
    assert m.embed_dim == 4096 and m.category_head.weight.shape == (3, 4096)


def test_vgg_baselines_normalise_frames_and_shop_images_in_training_as_at_test():
    """fashionnet runs its shared VGG once per step (one BatchNorm update for both sides)."""
    method = build_method(FashionNet, "tiny", cnn_info())
    method.train()
    batch = cnn_batch(b=4)
    bn = next(m for m in method.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = int(bn.num_batches_tracked)
    method.training_losses(batch)
    assert int(bn.num_batches_tracked) == before + 1


def test_cross_domain_triplet_uses_the_hardest_shop_images():
    clip = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(cross_domain_triplet(clip, image, torch.tensor([0, 1]), margin=0.3)) == 0.0
    swapped = float(cross_domain_triplet(clip, image.flip(0), torch.tensor([0, 1]), margin=0.3))
    assert abs(swapped - (math.sqrt(2) + 0.3)) < 1e-5


def _unit(deg: list[float]) -> torch.Tensor:
    rad = torch.tensor(deg).deg2rad()
    return torch.stack([rad.cos(), rad.sin()], dim=1)


def test_cross_domain_triplet_semihard_takes_the_closest_negative_beyond_the_positive():
    chord = lambda a: 2 * math.sin(math.radians(a) / 2)  # noqa: E731  (distance of unit vectors a degrees apart)
    labels = torch.tensor([0, 1, 2])
    # anchor 0 at 0 deg, its shop image at 40; the other anchors sit on their own shop images
    image = _unit([40.0, 10.0, 70.0])
    clip = _unit([0.0, 10.0, 70.0])
    hardest = float(cross_domain_triplet(clip, image, labels, 0.5))
    semihard = float(cross_domain_triplet(clip, image, labels, 0.5, "semihard"))
    assert abs(hardest - (chord(40) - chord(10) + 0.5) / 3) < 1e-5  # the 10-degree negative
    assert abs(semihard - (chord(40) - chord(70) + 0.5) / 3) < 1e-5  # the 70-degree one, beyond the positive
    # no negative beyond the positive: the farthest negative
    image = _unit([40.0, 10.0, 20.0])
    clip = _unit([0.0, 10.0, 20.0])
    semihard = float(cross_domain_triplet(clip, image, labels, 0.5, "semihard"))
    expected = (chord(40) - chord(20) + 0.5) + 2 * (0.5 - chord(10))
    assert abs(semihard - expected / 3) < 1e-5
    with pytest.raises(ValueError, match="mining 'random'"):
        cross_domain_triplet(clip, image, labels, 0.5, "random")


@pytest.mark.slow
def test_tiny_train_and_evaluate_through_the_cli(tmp_path, synth_lpr4m, capsys):
    # batch 8 is not the tiny profile's: it joins the label
    check_tiny_cli_run("fashionnet", [], "fashionnet-global-branch+train.batch_size-8", tmp_path, synth_lpr4m, capsys)
