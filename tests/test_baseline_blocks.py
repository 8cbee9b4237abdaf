"""What the baselines share, and the checks over several of them at once: the backbones
(local weights, torchvision VGG layout, last stride), frame chunking and selection, one
BatchNorm pass over frames and shop images, domain BatchNorm, the non-local and stripe blocks;
every CNN baseline ignores padding frames; the video baselines are registered with both profiles.
"""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F

from benchmark.core.registry import METHODS, load_builtin_methods
from methods.backbones import BackboneConfig, create_backbone, set_last_stride
from methods.base import build_method
from methods.domain_norm import FRAME, SHOP, SIDES, DomainBatchNorm, convert_domain_batchnorm, domain_forward
from methods.encoders import EncoderLoadError
from methods.frames import chunk_indices, frames_and_images, select_frames
from methods.nonlocal_blocks import NonLocalBlock, StripeNonLocalBlock, stripe_operators
from methods.seam_match_rcnn import SeamMatchRCNN
from methods.timesformer import TimeSformer
from methods.video_swin import VideoSwin
from tests.baseline_fixtures import cnn_batch, cnn_info, registered_on_one_thread

METHOD_CASES = [("fashionnet", {}), ("asymnet", {}), ("nvan", {}), ("nvan", {"ste": True}), ("mgh", {})]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from registered_on_one_thread()


def test_queries_ignore_padding_frames():
    """Changing what sits in padded frame slots must not change a clip's embedding."""
    for name, overrides in METHOD_CASES:
        torch.manual_seed(0)
        method = build_method(METHODS.get(name), "tiny", cnn_info(), overrides).eval()
        batch = cnn_batch(b=3)
        noisy = dict(batch, frames=batch["frames"].clone())
        noisy["frames"][1, 5:] = 100.0
        noisy["frames"][2, 2:] = -100.0
        with torch.no_grad():
            a, b = method.encode_query(batch).embedding, method.encode_query(noisy).embedding
        torch.testing.assert_close(a, b, msg=name)


def test_registered_with_paper_and_tiny_profiles():
    load_builtin_methods()
    for name, cls in (("timesformer", TimeSformer), ("video-swin", VideoSwin), ("seam-match-rcnn", SeamMatchRCNN)):
        assert METHODS.get(name) is cls
        assert set(cls.PROFILES) == {"paper", "tiny"}
        assert cls.default_config("paper").pretrained  # paper starts from named pretrained weights
        assert cls.default_config("tiny").pretrained is None  # tiny: random init, explicitly
    assert SeamMatchRCNN.supports_rerank and not TimeSformer.supports_rerank and not VideoSwin.supports_rerank


# --- backbones ----------------------------------------------------------------------------


def test_pretrained_weights_load_from_a_local_file_and_fail_loudly_otherwise(tmp_path, monkeypatch):
    cfg = BackboneConfig(name="resnet18", pretrained=None, channels=(8, 16, 32, 64))
    src = create_backbone(cfg)
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    loaded = create_backbone(BackboneConfig(name="resnet18", pretrained=str(path), channels=(8, 16, 32, 64)))
    torch.testing.assert_close(loaded.conv1.weight, src.conv1.weight)
    with pytest.raises(EncoderLoadError, match="no such file"):
        create_backbone(BackboneConfig(name="resnet18", pretrained=str(tmp_path / "absent.pt")))

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("hub unreachable")
        return orig(*args, **kwargs)

    orig = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(EncoderLoadError, match="resnet18.tv_in1k.*encoder.pretrained=none"):
        create_backbone(BackboneConfig(name="resnet18", pretrained="tv_in1k"))
    with pytest.raises(EncoderLoadError, match="standard widths"):
        create_backbone(BackboneConfig(name="resnet18", pretrained="tv_in1k", channels=(8, 16, 32, 64)))


def test_torchvision_vgg_checkpoints_are_converted_to_timm_layout(tmp_path):
    cfg = BackboneConfig(name="vgg16", pretrained=None, vgg_layers=(8, "M"))
    timm_vgg = create_backbone(cfg)
    tv = {k: v for k, v in timm_vgg.state_dict().items() if not k.startswith("pre_logits.")}
    tv["classifier.0.weight"] = timm_vgg.pre_logits.fc1.weight.reshape(4096, -1).clone()
    tv["classifier.0.bias"] = timm_vgg.pre_logits.fc1.bias.clone()
    tv["classifier.3.weight"] = timm_vgg.pre_logits.fc2.weight.reshape(4096, 4096).clone()
    tv["classifier.3.bias"] = timm_vgg.pre_logits.fc2.bias.clone()
    tv["classifier.6.weight"] = torch.zeros(1000, 4096)
    torch.save(tv, tmp_path / "vgg_tv.pth")
    loaded = create_backbone(dataclasses.replace(cfg, pretrained=str(tmp_path / "vgg_tv.pth")))
    torch.testing.assert_close(loaded.pre_logits.fc1.weight, timm_vgg.pre_logits.fc1.weight)
    torch.testing.assert_close(loaded.features[0].weight, timm_vgg.features[0].weight)


def test_last_stride_one_keeps_layer4_resolution():
    r = create_backbone(BackboneConfig(name="resnet18", pretrained=None, channels=(8, 16, 32, 64)))
    x = torch.randn(1, 3, 64, 64)
    assert r.forward_features(x).shape[-1] == 2
    set_last_stride(r, 1)
    assert r.forward_features(x).shape[-1] == 4


# --- frames and BatchNorm -------------------------------------------------------------------


def test_chunk_sampling_first_frame_per_chunk_at_test_and_inside_the_chunk_in_training():
    lengths = torch.tensor([8, 2, 10, 0])
    assert chunk_indices(lengths, 4, training=False).tolist() == [
        [0, 2, 4, 6],
        [0, 0, 1, 1],
        [0, 2, 5, 7],
        [0, 0, 0, 0],
    ]
    torch.manual_seed(0)
    for _ in range(20):
        idx = chunk_indices(lengths[:1], 4, training=True)[0].tolist()
        assert all(2 * i <= v < 2 * i + 2 for i, v in enumerate(idx))


def test_select_frames_never_picks_padding():
    frames = torch.arange(6).float().view(1, 6, 1).expand(2, 6, 1).clone()
    mask = torch.tensor([[False, True, False, True, True, False], [True] * 6])
    out, m = select_frames(frames, mask, 3, training=False)
    assert out[0, :, 0].tolist() == [1.0, 3.0, 4.0] and out[1, :, 0].tolist() == [0.0, 2.0, 4.0] and m.all()
    out, m = select_frames(frames, mask, None, training=False)
    assert out[0, :3, 0].tolist() == [1.0, 3.0, 4.0] and m[0].tolist() == [True] * 3 + [False] * 3


def test_frames_and_images_share_one_batchnorm_pass():
    """One call over frames and shop images: outputs split back in order, and BatchNorm
    normalises both sides by the statistics of the whole mix (what its running statistics
    blend at test time), not each side by its own."""
    net = torch.nn.BatchNorm1d(3, momentum=1.0)  # running stats = the last call's batch stats
    frames, images = torch.randn(2, 4, 3), torch.randn(5, 3) + 10.0
    f, i = frames_and_images(net, frames, images)
    assert f.shape == (2, 4, 3) and i.shape == (5, 3)
    both = torch.cat([frames.flatten(0, 1), images])
    torch.testing.assert_close(net.running_mean, both.mean(0))
    torch.testing.assert_close(torch.cat([f.flatten(0, 1), i]), F.batch_norm(both, None, None, training=True))


def test_domain_batchnorm_keeps_one_set_of_statistics_per_side():
    """Shared affine weights; each domain trains on its own batch statistics, is tested on its
    own running statistics, and both survive a state-dict round trip."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=1.0))
    assert convert_domain_batchnorm(net, SIDES) == 1
    bn = net[1]
    assert isinstance(bn, DomainBatchNorm) and bn.running_mean.shape == (2, 4)
    frames, images = torch.randn(6, 3, 5, 5), torch.randn(3, 3, 5, 5) * 3.0 + 10.0
    f, i = frames_and_images(net, frames.view(2, 3, 3, 5, 5), images)
    conv = net[0]
    for row, x, out in ((0, frames, f.flatten(0, 1)), (1, images, i)):
        y = conv(x)
        torch.testing.assert_close(bn.running_mean[row], y.mean((0, 2, 3)))
        ref = F.batch_norm(y, None, None, bn.weight, bn.bias, training=True)
        torch.testing.assert_close(out, ref)
    assert bn.num_batches_tracked.tolist() == [1, 1]
    net.eval()
    y = conv(images)
    expect = F.batch_norm(y, bn.running_mean[1], bn.running_var[1], bn.weight, bn.bias, training=False)
    torch.testing.assert_close(domain_forward(net, SHOP, images), expect)
    assert not torch.allclose(domain_forward(net, FRAME, images), expect)
    clone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    convert_domain_batchnorm(clone, SIDES)
    clone.load_state_dict(net.state_dict())
    torch.testing.assert_close(domain_forward(clone.eval(), SHOP, images), expect)
    with pytest.raises(ValueError, match="unknown domain 'video'"):
        domain_forward(net, "video", images)


def test_domain_batchnorm_converts_1d_and_3d_and_rejects_other_shapes():
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Sequential(torch.nn.BatchNorm3d(3)))
    assert convert_domain_batchnorm(net, SIDES, exclude=(net[1],)) == 1
    assert isinstance(net[1][0], torch.nn.BatchNorm3d)
    assert convert_domain_batchnorm(net[1], SIDES) == 1
    net.train()
    x = torch.randn(4, 3, 5)
    torch.testing.assert_close(net[0](x), F.batch_norm(x, None, None, net[0].weight, net[0].bias, training=True))
    v = torch.randn(2, 3, 2, 2, 2)
    bn3 = net[1][0]
    torch.testing.assert_close(bn3(v), F.batch_norm(v, None, None, bn3.weight, bn3.bias, training=True))
    torch.testing.assert_close(bn3.running_mean[0], 0.1 * v.mean((0, 2, 3, 4)))  # momentum 0.1 from 0
    torch.testing.assert_close(bn3.running_mean[1], torch.zeros(3))  # the other side untouched
    with pytest.raises(ValueError, match="expected a 5-d input, got 4-d"):
        net[1][0](torch.randn(2, 3, 2, 2))


# --- non-local blocks ------------------------------------------------------------------------


def test_nonlocal_blocks_start_as_identity_and_attend_over_all_positions():
    x = torch.randn(2, 8, 3, 4, 4)
    for block in (NonLocalBlock(8), NonLocalBlock(8, sub_sample=True), StripeNonLocalBlock(8, stripes=2)):
        torch.testing.assert_close(block(x), x)  # zero-initialised output BatchNorm
    block = NonLocalBlock(8).eval()
    torch.nn.init.ones_(block.W[1].weight)
    y = block(x)
    x2 = x.clone()
    x2[:, :, 2, 3, 3] += 5.0  # one far-away position changes every output position
    assert (block(x2) - y)[:, :, 0, 0, 0].abs().sum() > 0


def test_stripe_block_matches_the_official_partition_when_stripes_divide_the_height():
    torch.manual_seed(0)
    block = StripeNonLocalBlock(6, stripes=4).eval()
    torch.nn.init.normal_(block.W[1].weight)
    x = torch.randn(2, 6, 2, 8, 3)
    n, c, t, h, w = x.shape
    # reference: mean over each 2-row stripe, non-local over the T*4 nodes, broadcast back
    nodes = x.view(n, c, t, 4, 2, w).mean(dim=(4, 5)).unsqueeze(-1)
    theta = block.theta(nodes).flatten(2).transpose(1, 2)
    attn = torch.softmax(theta @ block.phi(nodes).flatten(2), dim=-1)
    y = (attn @ block.g(nodes).flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, 3, t, 4, 1)
    ref = x + block.W(y).squeeze(-1).repeat_interleave(2, dim=-1).unsqueeze(-1)
    torch.testing.assert_close(block(x), ref)
    pool, spread = stripe_operators(14, 16, torch.device("cpu"), torch.float32)
    assert (pool.sum(1) - 1).abs().max() < 1e-6 and (spread.sum(1) - 1).abs().max() < 1e-6
    assert (pool > 0).sum(0).min() >= 1  # every row belongs to a stripe
