"""Video Swin (tiny and paper profiles): the paper's torchvision Swin3D-B (built on the meta
device: no memory, no weights), padding frames filled cyclically, shapes, static images, the
tubelet conv stem, the loss falls on a fixed toy batch, a weight round trip and its errors.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models.video import swin3d_b

from methods.base import DataInfo, build_method
from methods.encoders import ConvStem, EncoderLoadError
from methods.video_swin import TubeletConvStem, VideoSwin, fill_padding
from tests.baseline_fixtures import VIDEO_SIZE, n_params, train_steps, video_batch


def test_video_swin_paper_is_torchvision_swin3d_b():
    with torch.device("meta"):
        model = build_method(VideoSwin, "paper", DataInfo(10, 2, 10, 224), {"pretrained": "none"})
        ref = swin3d_b(weights=None)
    ref_state = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("head.")}
    assert {k: v.shape for k, v in model.encoder.state_dict().items()} == ref_state
    assert 87e6 < n_params(model.encoder) < 88.1e6  # swin3d_b: 88.0M with its 400-way head
    assert model.proj.in_features == 1024 and model.proj.out_features == 512

    def depth_probs(m):
        return [b.stochastic_depth.p for b in m.encoder.modules() if hasattr(b, "stochastic_depth")]

    assert max(depth_probs(model)) == pytest.approx(0.1)  # the paper's stochastic depth; tiny turns it off
    assert set(depth_probs(build_method(VideoSwin, "tiny", DataInfo(10, 2, 4, VIDEO_SIZE)))) == {0.0}


def test_fill_padding_repeats_real_frames_cyclically():
    frames = torch.arange(2 * 5, dtype=torch.float).view(2, 5, 1)
    mask = torch.tensor([[True, True, False, False, False], [True] * 5])
    out = fill_padding(frames, mask)
    assert out[0, :, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert torch.equal(out[1], frames[1])


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return build_method(VideoSwin, "tiny", DataInfo(8, 2, 4, VIDEO_SIZE))


def test_video_swin_shapes_padding_and_static_image(swin):
    swin.eval()
    batch = video_batch(2, 4)
    with torch.no_grad():
        q = swin.encode_query(batch).embedding
        g = swin.encode_gallery(batch).embedding
        assert q.shape == (2, 128) and g.shape == (2, 128)
        assert torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)
        other = dict(batch, frames=batch["frames"].clone())
        other["frames"][0, 3] = 100.0  # the padded frame is replaced, so its content is irrelevant
        assert torch.allclose(swin.encode_query(other).embedding, q, atol=1e-5)
        static = {
            "frames": batch["image"][:, None].repeat(1, 2, 1, 1, 1),
            "frame_mask": torch.ones(2, 2, dtype=torch.bool),
        }
        assert torch.allclose(swin.encode_query(static).embedding, g, atol=1e-5)
        empty = dict(batch, frame_mask=torch.zeros(2, 4, dtype=torch.bool))
        assert torch.equal(swin.encode_query(empty).embedding, torch.zeros(2, 128))


def test_video_swin_conv_stem_keeps_the_tubelet_grid(swin):
    patchify = swin.encoder.patch_embed.proj  # tiny keeps the paper's tubelet conv
    assert isinstance(patchify, torch.nn.Conv3d) and patchify.stride == (2, 4, 4)
    stem = build_method(VideoSwin, "tiny", DataInfo(8, 2, 4, VIDEO_SIZE), {"stem": "conv"}).encoder.patch_embed.proj
    assert isinstance(stem, TubeletConvStem) and isinstance(stem.spatial, ConvStem)
    x = torch.randn(2, 3, 4, VIDEO_SIZE, VIDEO_SIZE)
    assert stem(x).shape == patchify(x).shape == (2, 48, 2, 28, 28)
    # frames are embedded independently before the temporal conv: frame pairs do not mix
    y = x.clone()
    y[:, :, 2:] = torch.randn(2, 3, 2, VIDEO_SIZE, VIDEO_SIZE)
    stem.eval()
    with torch.no_grad():
        assert torch.allclose(stem(x)[:, :, 0], stem(y)[:, :, 0], atol=1e-5)
        assert not torch.allclose(stem(x)[:, :, 1], stem(y)[:, :, 1])
    with pytest.raises(ValueError, match="stem 'nope'"):
        build_method(VideoSwin, "tiny", DataInfo(8, 2, 4, VIDEO_SIZE), {"stem": "nope"})


def test_video_swin_loss_falls():
    torch.manual_seed(0)
    model = build_method(VideoSwin, "tiny", DataInfo(8, 2, 4, VIDEO_SIZE))
    losses = train_steps(model, video_batch(4, 4), steps=3)
    assert losses[-1] < 0.5 * losses[0], losses


def test_video_swin_weights_roundtrip_and_errors(tmp_path, swin):
    path = tmp_path / "swin.pt"
    torch.save(swin.state_dict(), path)  # this method's own state dict
    again = build_method(VideoSwin, "tiny", DataInfo(8, 2, 4, VIDEO_SIZE), {"pretrained": str(path)})
    want, got = swin.encoder.state_dict(), again.encoder.state_dict()
    assert got.keys() == want.keys()  # paired by name: every tensor, none missing or extra
    for k, a in want.items():
        assert torch.equal(a, got[k]), k
    with pytest.raises(EncoderLoadError, match="Swin-B sizes with the patchify stem only"):
        build_method(VideoSwin, "tiny", DataInfo(8, 2, 4, VIDEO_SIZE), {"pretrained": "KINETICS400_V1"})
    with pytest.raises(EncoderLoadError, match="unknown Swin3D_B_Weights 'NOPE'"):
        with torch.device("meta"):
            build_method(VideoSwin, "paper", DataInfo(8, 2, 4, 224), {"pretrained": "NOPE"})
    with pytest.raises(EncoderLoadError, match="missing.pt: no such file"):
        build_method(VideoSwin, "tiny", DataInfo(8, 2, 4, VIDEO_SIZE), {"pretrained": str(tmp_path / "missing.pt")})
