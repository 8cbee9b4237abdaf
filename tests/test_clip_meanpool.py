"""clip-meanpool: registration, profiles, masked mean pooling, the InfoNCE loss, --pretrained."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.cli.args import pretrained_override
from benchmark.core.registry import METHODS, load_builtin_methods
from methods.base import DataInfo, apply_overrides, build_method
from methods.clip_meanpool import ClipMeanPool
from methods.encoders import ConvStem, EncoderConfig, build_clip

INFO = DataInfo(num_products=10, num_categories=2, num_frames=3, image_size=112)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_method(ClipMeanPool, "tiny", INFO, {"encoder.layers": "1"}).eval()


def _batch(b: int = 3, t: int = 3) -> dict:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 2:] = False
    return {
        "frames": torch.randn(b, t, 3, 112, 112, generator=g),
        "frame_mask": mask,
        "image": torch.randn(b, 3, 112, 112, generator=g),
    }


def test_registered_with_both_profiles():
    load_builtin_methods()
    assert METHODS.get("clip-meanpool") is ClipMeanPool
    paper = ClipMeanPool.default_config("paper").encoder
    assert (paper.model_name, paper.pretrained, paper.image_size, paper.patch_size) == ("ViT-B-32", "openai", 224, 32)
    tiny = ClipMeanPool.default_config("tiny").encoder
    assert (tiny.pretrained, tiny.image_size, tiny.patch_size, tiny.width) == (None, 112, 16, 192)
    assert (paper.stem, tiny.stem) == ("patchify", "conv")


@pytest.mark.parametrize("patch,channels", [(16, [24, 48, 96, 192]), (28, [96, 192]), (7, [])])
def test_conv_stem_keeps_the_patch_grid(patch, channels):
    """3x3 stride-2 convs while the patch halves (at most 4), then a conv taking the rest of the stride."""
    stem = ConvStem(192, patch)
    convs = [m for m in stem.layers if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs[:-1]] == channels
    assert all(c.stride == (2, 2) and c.kernel_size == (3, 3) for c in convs[:-1])
    last = patch >> len(channels)
    assert (convs[-1].kernel_size, convs[-1].stride, convs[-1].out_channels) == ((last, last), (last, last), 192)
    assert stem(torch.zeros(2, 3, 112, 112)).shape == (2, 192, 112 // patch, 112 // patch)


def test_tiny_encoder_has_the_conv_stem_and_the_same_tokens(model):
    assert isinstance(model.encoder.visual.conv1, ConvStem)
    with torch.no_grad():
        emb, tokens = model.encoder.encode_images(torch.zeros(2, 3, 112, 112))
    assert emb.shape == (2, 128) and tokens.shape == (2, 1 + 7 * 7, 192)


def test_conv_stem_refuses_hub_weights_and_unknown_stems():
    with pytest.raises(ValueError, match="stem 'conv' needs model_name 'custom'.*patchify stem"):
        build_clip(EncoderConfig(stem="conv"))
    with pytest.raises(ValueError, match="stem 'dct' is not one of patchify, conv"):
        build_clip(EncoderConfig(stem="dct"))


def test_embeddings_are_unit_norm_and_padding_is_ignored(model):
    batch = _batch()
    with torch.no_grad():
        q = model.encode_query(batch).embedding
        g = model.encode_gallery(batch).embedding
        torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
        torch.testing.assert_close(g.norm(dim=1), torch.ones(3))
        # changing a padded frame changes nothing; changing a real one does
        altered = dict(batch, frames=batch["frames"].clone())
        altered["frames"][0, 2] += 5.0
        torch.testing.assert_close(model.encode_query(altered).embedding, q)
        altered["frames"][0, 1] += 5.0
        assert not torch.allclose(model.encode_query(altered).embedding[0], q[0])
        # the video embedding is the normalised mean of the normalised frame embeddings
        frames, _ = model.encoder.encode_frames(batch["frames"][:1, :2])
        want = F.normalize(F.normalize(frames[0], dim=-1).mean(0), dim=0)
        torch.testing.assert_close(q[0], want, rtol=1e-4, atol=1e-5)


def test_loss_is_symmetric_info_nce_with_the_learnable_scale(model):
    batch = _batch()
    model.train()
    try:
        loss = model.training_losses(batch)["icl"]
        with torch.no_grad():
            v = model.encode_query(batch).embedding
            i = model.encode_gallery(batch).embedding
        logits = model.encoder.logit_scale.exp() * v @ i.T
        labels = torch.arange(3)
        want = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=1e-5)
        assert math.isclose(float(model.encoder.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-4)
        loss.backward()
        assert model.encoder.logit_scale.grad is not None and model.encoder.logit_scale.grad.abs() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_every_parameter_trains_at_the_encoder_rate(model):
    groups = model.parameter_groups(1e-6, 1e-4, 0.2)
    assert {g["lr"] for g in groups} == {1e-6}
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


def test_image_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="built for 112 px but the data profile crops 224 px"):
        build_method(ClipMeanPool, "tiny", DataInfo(10, 2, 3, 224))


def test_pretrained_path_loads_those_weights(tmp_path):
    cfg = apply_overrides(ClipMeanPool.default_config("tiny"), {"encoder.layers": "1"})
    torch.manual_seed(7)
    source = build_clip(cfg.encoder)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    override = pretrained_override(ClipMeanPool, "tiny", str(tmp_path / "w.pt"))
    assert override == {"encoder.pretrained": str(tmp_path / "w.pt")}
    torch.manual_seed(8)
    m = build_method(ClipMeanPool, "tiny", INFO, {"encoder.layers": "1", **override})
    loaded = m.encoder.visual.state_dict()
    for key, value in source.visual.state_dict().items():  # conv stem, BN statistics, transformer
        torch.testing.assert_close(loaded[key], value, msg=key)
    torch.testing.assert_close(m.encoder.logit_scale, source.logit_scale)
