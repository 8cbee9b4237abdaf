"""NVAN and STE-NVAN (tiny and paper profiles): the loss falls on a fixed toy batch, embedding
shapes, the paper's ResNet-50 with five non-local blocks (built on the meta device), the
encoder's learning rate, STE-NVAN's frame chunking, per-side BatchNorm statistics, the
non-local blocks (they learn, and attend within a clip or a frame pair), STE's pair pooling,
a tiny run through the CLI.
"""

from __future__ import annotations

import pytest
import torch

import methods.nvan as nvan_module
from benchmark.core.config import for_method, get_profile
from methods.backbones import count_parameters
from methods.base import build_method
from methods.frames import chunk_indices
from methods.mgh import MGH
from methods.nonlocal_blocks import NonLocalBlock, StripeNonLocalBlock, volume_to_frames
from methods.nvan import NVAN, temporal_pair_maxpool
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
    paper_model,
    registered_on_one_thread,
)

NVAN_CASES = pytest.mark.parametrize("overrides", [{}, {"ste": True}], ids=["nvan", "ste-nvan"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    yield from registered_on_one_thread()


@NVAN_CASES
def test_tiny_training_loss_falls_on_a_fixed_batch(overrides):
    check_tiny_training_loss_falls("nvan", overrides)


@NVAN_CASES
def test_embeddings_have_the_declared_shapes(overrides):
    check_embedding_shapes("nvan", overrides)


def test_paper_nvan_is_resnet50_with_five_nonlocal_blocks():
    for ste in (False, True):
        m = paper_model(NVAN, ste=ste)
        assert count_parameters(m.encoder) == 23_508_032  # torchvision/timm ResNet-50 trunk
        assert count_parameters(m.nonlocal_blocks) == 2 * nonlocal_params(512) + 3 * nonlocal_params(1024)
        assert m.nl_at == {1: [2, 3], 2: [3, 4, 5]}
        assert m.embed_dim == 2048 and m.classifier.weight.shape == (1000, 2048) and m.classifier.bias is None
        assert m.num_parameters() == 23_508_032 + 7_358_464 + 2 * 2048 + 1000 * 2048


def test_encoder_parameters_get_the_encoder_learning_rate():
    m = build_method(
        NVAN, "paper", cnn_info(), {"encoder.pretrained": None, "encoder.name": "resnet18", "nl_layer3": 2}
    )
    t = for_method(get_profile("paper"), NVAN.TRAIN_RECIPE).train  # NVAN's own settings, not RICE's
    groups = {g["name"]: g for g in m.parameter_groups(t.lr_encoder, t.lr_new, t.weight_decay)}
    assert groups["encoder"]["lr"] == 1e-4 and groups["encoder"]["weight_decay"] == 5e-5
    # a command-line rate (the engine passes the resolved TrainConfig's) reaches the groups
    assert {g["lr"] for g in m.parameter_groups(3e-5, 3e-5, 0.0)} == {3e-5}
    enc_ids = {id(p) for p in m.encoder.parameters()}
    assert {id(p) for g in groups.values() if g["name"].startswith("encoder") for p in g["params"]} == enc_ids
    tiny = build_method(NVAN, "tiny", cnn_info())
    lrs = {g["name"]: g["lr"] for g in tiny.parameter_groups(1e-6, 1e-4, 0.2)}
    assert lrs["encoder"] == 1e-6 and lrs["new"] == 1e-4  # tiny keeps the profile's
    assert not any(p is tiny.bnneck.bias for g in tiny.parameter_groups(1, 1, 0) for p in g["params"])


def test_ste_nvan_chunking_pads_with_the_last_frame_as_the_official_loader():
    """STE-NVAN's util/utils.py: chunks of ceil(F / S) frames, the list padded with the last
    frame; the first of each chunk at test, any slot of a chunk in training."""
    lengths = torch.tensor([10, 8, 3, 0, 17])
    test = chunk_indices(lengths, 8, training=False, rule="ste-nvan").tolist()
    assert test == [
        [0, 2, 4, 6, 8, 9, 9, 9],
        list(range(8)),
        [0, 1, 2, 2, 2, 2, 2, 2],
        [0] * 8,
        [0, 3, 6, 9, 12, 15, 16, 16],
    ]
    assert chunk_indices(torch.tensor([3]), 4, training=False).tolist() == [
        [0, 0, 1, 2]
    ]  # "equal": early frames repeat
    torch.manual_seed(0)
    seen = [set() for _ in range(8)]
    for _ in range(200):
        for i, v in enumerate(chunk_indices(lengths[:1], 8, training=True, rule="ste-nvan")[0].tolist()):
            seen[i].add(v)
    # 10 frames: chunks [0, 1] [2, 3] [4, 5] [6, 7] [8, 9], then padding chunks of the last frame
    assert seen == [{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {9}, {9}, {9}]
    with pytest.raises(ValueError, match="rule 'nope'"):
        chunk_indices(lengths, 8, training=False, rule="nope")
    # the profiles: NVAN and MGH follow the official rule in both
    assert NVAN.default_config("paper").frame_chunks == NVAN.default_config("tiny").frame_chunks == "ste-nvan"
    assert MGH.default_config("paper").frame_chunks == MGH.default_config("tiny").frame_chunks == "ste-nvan"
    method = build_method(NVAN, "tiny", cnn_info(), {"num_frames": 4}).eval()
    frames = torch.arange(6, dtype=torch.float32).view(1, 6, 1, 1, 1).expand(1, 6, 3, 2, 2)
    picked = []
    method.features = lambda clips: picked.append(clips[0, :, 0, 0, 0].tolist()) or torch.zeros(1, method.embed_dim)
    method.encode_query({"frames": frames, "frame_mask": torch.ones(1, 6, dtype=torch.bool)})
    assert picked == [[0.0, 2.0, 4.0, 5.0]]  # ceil(6 / 4) = 2: chunks [0, 1] [2, 3] [4, 5] [5, 5]


def test_reid_baselines_keep_per_side_statistics_and_a_shared_bnneck():
    check_per_side_statistics_and_shared_bnneck("nvan")


def test_ste_pair_maxpool_halves_time_and_leaves_single_images_alone():
    x = torch.arange(2 * 4, dtype=torch.float32).view(8, 1, 1, 1)  # 2 clips x 4 frames
    y, t = temporal_pair_maxpool(x, 4)
    assert t == 2 and y.view(-1).tolist() == [1.0, 3.0, 5.0, 7.0]
    img = torch.randn(3, 2, 2, 2)
    z, t1 = temporal_pair_maxpool(img, 1)
    assert t1 == 1 and torch.equal(z, img)


@NVAN_CASES
def test_nonlocal_blocks_learn_from_identity_and_change_the_embedding(overrides):
    check_nonlocal_blocks_learn("nvan", overrides)


def _nonlocal_outputs(method, batch, stage="1"):
    """The per-frame output of the first non-local block of ``stage`` in encode_query."""
    out = []
    block = method.nonlocal_blocks[stage][0]
    handle = block.register_forward_hook(lambda mod, args, y: out.append(volume_to_frames(y)))
    try:
        encode_with(method, batch)
    finally:
        handle.remove()
    return out[0]


@pytest.mark.parametrize("ste", [False, True])
def test_nonlocal_attention_stays_within_a_clip_and_ste_within_a_frame_pair(ste):
    """NVAN attends over all frames of one clip; STE-NVAN's stripe blocks over one pair of frames
    at a time; neither across clips. A change to frame 3 of clip 0 must reach, at the first
    non-local block's output, every frame of clip 0 (NVAN) or only frames 2-3 (STE), and no
    frame of clip 1."""
    torch.manual_seed(0)
    method = build_method(NVAN, "tiny", cnn_info(), {"ste": ste, "num_frames": 4}).eval()
    for block in method.nonlocal_blocks.modules():
        if isinstance(block, (NonLocalBlock, StripeNonLocalBlock)):
            torch.nn.init.ones_(block.W[1].weight)  # make the blocks non-identity
    batch = cnn_batch(b=3, t=4)
    batch["frame_mask"][:] = True
    moved = dict(batch, frames=batch["frames"].clone())
    moved["frames"][0, 3] += 3.0 * torch.randn_like(moved["frames"][0, 3])
    a, b = _nonlocal_outputs(method, batch), _nonlocal_outputs(method, moved)
    changed = [(a[i] - b[i]).abs().max().item() > 1e-5 for i in range(12)]  # clip 0: 0-3, clips 1-2: 4-11
    assert changed == ([False, False, True, True] if ste else [True] * 4) + [False] * 8, changed


def test_ste_pools_frame_pairs_after_layer2_and_layer3_and_nvan_does_not(monkeypatch):
    calls = []
    real = nvan_module.temporal_pair_maxpool

    def record(x, t):
        y, t2 = real(x, t)
        calls.append((t, t2, x.shape[0], y.shape[0]))
        return y, t2

    monkeypatch.setattr(nvan_module, "temporal_pair_maxpool", record)
    batch = cnn_batch(b=3, t=4)
    for ste, expected in ((True, [(4, 2, 12, 6), (2, 1, 6, 3)]), (False, [])):
        calls.clear()
        method = build_method(NVAN, "tiny", cnn_info(), {"ste": ste, "num_frames": 4})
        encode_with(method, batch)
        assert calls == expected, (ste, calls)
    calls.clear()
    x = torch.arange(8.0).view(8, 1, 1, 1)
    x[1] = -1.0  # a pair's max is its larger frame: (0, -1) -> 0
    y, _ = real(x, 4)
    assert y.view(-1).tolist() == [0.0, 3.0, 5.0, 7.0]


@pytest.mark.slow
def test_tiny_train_and_evaluate_through_the_cli(tmp_path, synth_lpr4m, capsys):
    check_tiny_cli_run("nvan", ["--set", "ste=true"], "nvan-ste+train.batch_size-8", tmp_path, synth_lpr4m, capsys)
