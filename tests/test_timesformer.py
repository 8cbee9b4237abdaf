"""TimeSformer (tiny and paper profiles): the paper's TimeSformer-B (built on the meta device:
no memory, no weights) against timm's ViT-B plus the divided temporal attention, the temporal
projections' initialisation, shapes, padding, one-frame images, the loss falls on a fixed toy
batch, ViT weights loaded as the official loader does, the tiny conv stem, weight errors.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from methods.base import DataInfo, build_method
from methods.encoders import ConvStem, EncoderLoadError
from methods.timesformer import TimeSformer, vit_to_timesformer
from tests.baseline_fixtures import VIDEO_SIZE, n_params, train_steps, video_batch


def test_timesformer_paper_is_timesformer_base():
    with torch.device("meta"):
        model = build_method(TimeSformer, "paper", DataInfo(10, 2, 8, 224), {"pretrained": "none"})
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    d = 768
    per_block = (d * 3 * d + 3 * d) + (d * d + d) + (d * d + d) + 2 * d  # temporal qkv, proj, temporal_fc, norm
    expected = n_params(vit) + 12 * per_block + 8 * d  # + time embedding (8 frames)
    assert n_params(model.encoder) == expected
    assert 120e6 < n_params(model.encoder) < 122e6  # TimeSformer-B: ~121M
    assert model.proj.in_features == 768 and model.proj.out_features == 512
    assert model.cfg.input_mean == (0.45, 0.45, 0.45) and model.cfg.input_std == (0.225, 0.225, 0.225)


@pytest.fixture(scope="module")
def tsf():
    torch.manual_seed(0)
    return build_method(TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE))


def test_timesformer_temporal_fc_zero_except_first_block(tsf):
    blocks = tsf.encoder.blocks
    assert blocks[0].temporal_fc.weight.abs().sum() > 0
    for blk in blocks[1:]:
        assert blk.temporal_fc.weight.abs().sum() == 0 and blk.temporal_fc.bias.abs().sum() == 0


def test_timesformer_shapes_padding_and_one_frame_image(tsf):
    tsf.eval()
    batch = video_batch(3, 3)
    with torch.no_grad():
        torch.nn.init.normal_(tsf.encoder.time_embed, std=0.5)  # make the time embedding matter
        q = tsf.encode_query(batch).embedding
        g = tsf.encode_gallery(batch).embedding
        assert q.shape == (3, 128) and g.shape == (3, 128)
        assert torch.allclose(q.norm(dim=-1), torch.ones(3), atol=1e-5)
        # a padded frame's pixels never reach the embedding
        other = dict(batch, frames=batch["frames"].clone())
        other["frames"][0, 2] = torch.randn(3, VIDEO_SIZE, VIDEO_SIZE) * 5
        assert torch.allclose(tsf.encode_query(other).embedding, q, atol=1e-5)
        assert not torch.allclose(q[0], q[1])
        # an image is the same network on a 1-frame clip: equal to a clip whose only real frame is it
        frames = torch.stack([batch["image"], batch["frames"][:, 0], batch["frames"][:, 1]], dim=1)
        clip = {"frames": frames, "frame_mask": torch.tensor([[True, False, False]]).repeat(3, 1)}
        assert torch.allclose(tsf.encode_query(clip).embedding, g, atol=1e-4)
        # a clip with no frame at all (a missing query) gets a zero embedding, not NaN
        empty = dict(batch, frame_mask=torch.zeros(3, 3, dtype=torch.bool))
        assert torch.equal(tsf.encode_query(empty).embedding, torch.zeros(3, 128))


def test_timesformer_loss_falls():
    torch.manual_seed(0)
    model = build_method(TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE), {"depth": "2"})
    losses = train_steps(model, video_batch(4, 3), steps=8)  # the conv stem's BatchNorm: slower on one toy batch
    assert set(model.training_losses(video_batch(4, 3))) == {"infonce"}
    assert losses[-1] < 0.5 * losses[0], losses


def test_timesformer_loads_a_vit_state_dict_like_the_official_loader(tmp_path):
    torch.manual_seed(1)
    vit = VisionTransformer(
        img_size=VIDEO_SIZE, patch_size=16, embed_dim=192, depth=4, num_heads=4, qkv_bias=True, num_classes=7
    )
    path = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), path)
    model = build_method(
        TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE), {"pretrained": str(path), "stem": "patchify"}
    )
    enc = model.encoder
    assert model.weights_source == str(path)
    for i in range(4):
        assert torch.equal(enc.blocks[i].attn.qkv.weight, vit.blocks[i].attn.qkv.weight)
        # temporal attention and its norm start as copies of the spatial ones
        assert torch.equal(enc.blocks[i].temporal_attn.qkv.weight, vit.blocks[i].attn.qkv.weight)
        assert torch.equal(enc.blocks[i].temporal_norm1.weight, vit.blocks[i].norm1.weight)
    assert torch.equal(enc.pos_embed, vit.pos_embed) and torch.equal(enc.cls_token, vit.cls_token)
    # an official checkpoint's 8-frame time embedding is resized to the clip length (nearest)
    te = torch.arange(8.0).view(1, 8, 1).expand(1, 8, 4)
    out = vit_to_timesformer({"model.time_embed": te, "model.head.weight": torch.zeros(2)}, 4)
    assert "head.weight" not in out and out["time_embed"][0, :, 0].tolist() == [0.0, 2.0, 4.0, 6.0]


def test_timesformer_tiny_has_a_conv_stem_with_the_patchify_grid(tsf):
    stem = tsf.encoder.patch_embed.proj
    assert isinstance(stem, ConvStem)
    patchify = build_method(
        TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE), {"stem": "patchify"}
    ).encoder.patch_embed
    assert isinstance(patchify.proj, torch.nn.Conv2d) and patchify.proj.stride == (16, 16)
    x = torch.randn(2, 3, VIDEO_SIZE, VIDEO_SIZE)
    assert tsf.encoder.patch_embed(x).shape == patchify(x).shape == (2, 49, 192)  # same 7x7 token grid
    with torch.device("meta"):
        assert (
            build_method(TimeSformer, "paper", DataInfo(10, 2, 8, 224), {"pretrained": "none"}).cfg.stem == "patchify"
        )
    with pytest.raises(EncoderLoadError, match="patchify"):  # ImageNet ViT weights fit the patchify conv only
        build_method(TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE), {"pretrained": "vit_tiny_patch16_224"})
    with pytest.raises(ValueError, match="stem 'nope'"):
        build_method(TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE), {"stem": "nope"})


def test_timesformer_weight_errors_name_the_file(tmp_path):
    with pytest.raises(EncoderLoadError, match="no such file"):
        build_method(TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE), {"pretrained": str(tmp_path / "none.pt")})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderLoadError, match="bad.pt"):
        build_method(TimeSformer, "tiny", DataInfo(8, 2, 3, VIDEO_SIZE), {"pretrained": str(bad)})
    with pytest.raises(ValueError, match="224 px"):
        build_method(TimeSformer, "paper", DataInfo(8, 2, 3, VIDEO_SIZE), {"pretrained": "none"})
