"""RICE (methods/rice.py): encodings and masks, PMD training, re-ranking, ablations, profiles."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark.core.registry import METHODS
from methods.base import DataInfo, build_method
from methods.encoders import EncoderLoadError
from methods.ipd import boxes_to_patch_keep
from methods.losses import hardest_negatives
from methods.rice import Rice
from tests.rice_fixtures import SMALL, one_thread, small_rice, toy_batch  # noqa: F401 (autouse fixture)

L = 50  # 1 + 7x7 tokens per frame


def test_registered_with_the_full_model_as_default() -> None:
    assert METHODS.get("rice") is Rice
    cfg = Rice.default_config("paper")
    assert (cfg.pmd, cfg.pfr, cfg.ipd, cfg.text) == (True, True, "single", True)
    assert cfg.encoder.model_name == "ViT-B-32" and cfg.encoder.pretrained == "openai"
    assert cfg.pmd_heads == 8 and cfg.num_negatives == 3 and cfg.match_scale == 10.0
    assert Rice.default_config("tiny").encoder.image_size == 112


@torch.no_grad()
def test_encoded_shapes_and_token_masks() -> None:
    m = small_rice(ipd="oracle").eval()
    batch = toy_batch()
    q, g = m.encode_query(batch), m.encode_gallery(batch)
    assert q.embedding.shape == (4, 64) and g.embedding.shape == (4, 64)  # visual + text halves
    assert torch.allclose(q.embedding.norm(dim=-1), torch.ones(4), atol=1e-5)
    tokens, keep = q.extras["pmd_tokens"], q.extras["pmd_keep"]
    assert tokens.shape == (4, 3 * L + 1, 64) and keep.shape == (4, 3 * L + 1)
    frames = keep[:, : 3 * L].view(4, 3, L)
    assert not bool(frames[1, 2].any())  # the padding frame is dropped entirely
    assert bool(frames[0, 0].all())  # a real frame without a box keeps every patch
    expected = boxes_to_patch_keep(batch["boxes"][0, 1], torch.tensor(True), 7)
    assert torch.equal(frames[0, 1], expected) and int(expected.sum()) < L
    real = batch["frame_mask"]
    assert bool(frames[..., 0][real].all())  # CLS kept on every real frame
    assert keep[:, -1].tolist() == [False, True, True, False]  # the ASR token; "" is absent
    assert g.extras["pmd_tokens"].shape == (4, L + 1, 64) and bool(g.extras["pmd_keep"].all())


@torch.no_grad()
def test_padding_frames_do_not_change_the_query() -> None:
    m = small_rice(ipd="single").eval()
    batch = toy_batch()
    q1 = m.encode_query(batch)
    batch["frames"][1, 2] = torch.randn(3, 112, 112) * 5
    q2 = m.encode_query(batch)
    assert torch.allclose(q1.embedding, q2.embedding, atol=1e-5)
    g = m.encode_gallery(batch)
    assert torch.allclose(m.rerank(q1, g), m.rerank(q2, g), atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("ipd, unchanged", [("oracle", True), ("none", False)])
def test_ipd_mask_hides_patches_outside_the_box_from_the_encoder(ipd: str, unchanged: bool) -> None:
    m = small_rice(ipd=ipd, text=False, pmd=False, pfr=False).eval()
    batch = toy_batch()
    e1 = m.encode_query(batch).embedding
    batch["frames"][0, 1, :, 96:, 96:] += 3.0  # the bottom-right cell, far from the box
    e2 = m.encode_query(batch).embedding
    assert torch.allclose(e1[0], e2[0], atol=1e-5) == unchanged
    assert torch.allclose(e1[1:], e2[1:])


def _capture_pmd(m: Rice) -> list:
    """Per PMD call: (queries, query_keep, per-pair keys, per-pair key_keep), (scores, weights).
    The keys are the clips' tokens, or their projected keys where the call passes those
    (``kv_projected``: the image-anchored training loss)."""
    calls: list = []

    def hook(mod, args, kwargs, out):
        queries, q_keep, keys, k_keep = args[:4]
        if kwargs.get("kv_projected") is not None:
            keys = kwargs["kv_projected"][0]
        index = kwargs.get("key_index")
        if index is not None:
            keys, k_keep = keys[index], k_keep[index]
        index = kwargs.get("query_index")
        if index is not None:
            queries, q_keep = queries[index], q_keep[index]
        calls.append(((queries, q_keep, keys, k_keep), out))

    m.pmd.register_forward_hook(hook, with_kwargs=True)
    return calls


def test_pmd_loss_uses_the_hardest_in_batch_negatives() -> None:
    torch.manual_seed(0)
    m = small_rice(ipd="none", pfr=False)
    batch = toy_batch(b=6)
    batch["product"] = torch.tensor([0, 1, 2, 3, 4, 1])  # videos 1 and 5 show the same product
    calls = _capture_pmd(m)
    losses = m.training_losses(batch)
    (queries, q_keep, keys, k_keep), (scores, _) = calls[0]
    with torch.no_grad():
        video = m._video_side(batch, train=True)
        image = m._image_side(batch)
        video_keys = m.pmd.cross_layer.project_kv(video.tokens)[0]  # what the loss hands PMD
    sim = image.embedding @ video.embedding.t()
    exclude = batch["product"][:, None] == batch["product"][None, :]
    neg, valid = hardest_negatives(sim, torch.arange(6), 3, exclude)
    assert keys.shape[0] == 6 * 4
    for i in range(6):
        assert torch.allclose(keys[4 * i], video_keys[i], atol=1e-5)  # column 0: the positive
        assert torch.allclose(queries[4 * i + 1], image.tokens[i], atol=1e-5)
        for j in range(3):
            if valid[i, j]:
                assert torch.allclose(keys[4 * i + 1 + j], video_keys[neg[i, j]], atol=1e-5)
    assert 5 not in neg[1][valid[1]].tolist() and 1 not in neg[5][valid[5]].tolist()
    logits = (
        scores.detach()
        .view(6, 4)
        .masked_fill(~torch.cat([torch.ones(6, 1, dtype=torch.bool), valid], 1), float("-inf"))
    )
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    assert float(losses["pmd"].detach()) == pytest.approx(float(expected), rel=1e-5)


def test_rerank_agrees_with_the_training_time_matching_head() -> None:
    torch.manual_seed(0)
    m = small_rice(ipd="oracle").eval()  # eval: no dropout; oracle: the same mask in both paths
    batch = toy_batch(b=5)
    calls = _capture_pmd(m)
    with torch.no_grad():
        m.training_losses(batch)
        (_, _, keys, _), (scores, _) = calls[0]
        q, g = m.encode_query(batch), m.encode_gallery(batch)
        calls.clear()
        assert torch.allclose(m.rerank(q, g), scores.view(5, 4)[:, 0], atol=1e-4)
        # the negatives too: find which clip each key row came from and re-score that pair
        clip_keys = m.pmd.cross_layer.project_kv(q.extras["pmd_tokens"].to(keys.dtype))[0]
        owner = [int((clip_keys - keys[r]).abs().flatten(1).sum(1).argmin()) for r in range(20)]
        qi = torch.tensor(owner)
        gi = torch.arange(5).repeat_interleave(4)
        assert torch.allclose(m.rerank(q.select(qi), g.select(gi)), scores, atol=1e-4)
        # one clip against the whole gallery (its pairs arrive consecutively and share one
        # key projection) scores as each pair does alone
        qi0 = torch.zeros(5, dtype=torch.long)
        alone = torch.cat([m.rerank(q.select(qi0[:1]), g.select(torch.tensor([j]))) for j in range(5)])
        assert torch.allclose(m.rerank(q.select(qi0), g.select(torch.arange(5))), alone, atol=1e-4)
        # chunking does not change anything
        m.cfg = dataclasses.replace(m.cfg, rerank_chunk=3)
        assert torch.allclose(m.rerank(q.select(qi), g.select(gi)), scores, atol=1e-4)


def test_loss_falls_on_a_toy_batch() -> None:
    torch.manual_seed(0)
    m = small_rice()
    batch = toy_batch(b=6, seed=1)
    opt = torch.optim.AdamW(m.parameter_groups(1e-3, 1e-3, 0.0))
    totals = []
    for _ in range(20):
        losses = m.training_losses(batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert set(losses) == {"icl", "pmd", "pfr", "det_class", "det_l1", "det_giou"}
    assert sum(totals[-3:]) / 3 < 0.6 * totals[0], totals


@pytest.mark.parametrize(
    "anchor, names",
    [
        ("image", {"icl", "pmd", "pfr", "det_class", "det_l1", "det_giou"}),
        ("both", {"icl", "pmd", "pmd_clip", "pfr", "det_class", "det_l1", "det_giou"}),
    ],
)
def test_every_named_loss_falls_on_a_toy_batch(anchor: str, names: set) -> None:
    """Not only the sum: ICL alone could carry it while PMD or the detector learn nothing.

    Measured (40 steps, end / start): PMD 0.01 (0.90 with PMD frozen and its inputs detached),
    ICL and the detector losses <= 0.19. PFR's target moves as PMD's attention sharpens (it
    ends at 0.82-1.0 of its start), so PFR must reach 0.8 of its start at some step. Measured
    with the OpenAI text tower, kept here: with the tiny Chinese-CLIP BERT's text token among
    PMD's keys, PFR's minimum on this toy batch is 0.88 of its start (40 steps)."""
    torch.manual_seed(0)
    m = small_rice(pmd_anchor=anchor, **{"encoder.text_tower": "openai-clip"})
    batch = toy_batch(b=6, seed=1)
    opt = torch.optim.AdamW(m.parameter_groups(1e-3, 1e-3, 0.0))
    history: dict[str, list[float]] = {}
    for _ in range(40):
        losses = m.training_losses(batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        for name, value in losses.items():
            history.setdefault(name, []).append(float(value.detach()))
    assert set(history) == names
    for name, values in history.items():
        if name == "pfr":
            assert min(values) < 0.8 * values[0], (name, values)
        else:
            assert sum(values[-3:]) / 3 < 0.5 * values[0], (name, values)


VARIANTS = [
    ({"pmd": False, "pfr": False, "ipd": "none", "text": False}, "icl", {"icl"}),
    ({"pfr": False, "ipd": "none", "text": False}, "icl+pmd", {"icl", "pmd"}),
    ({"ipd": "none", "text": False}, "icl+pmd+pfr-ln", {"icl", "pmd", "pfr"}),
    ({"ipd": "none", "text": False, "pfr_target": "raw"}, "icl+pmd+pfr", {"icl", "pmd", "pfr"}),
    ({"text": False}, "icl+pmd+pfr-ln+ipd", {"icl", "pmd", "pfr", "det_class", "det_l1", "det_giou"}),
    ({}, "icl+pmd+pfr-ln+ipd+text", {"icl", "pmd", "pfr", "det_class", "det_l1", "det_giou"}),
    ({"ipd": "multi"}, "icl+pmd+pfr-ln+ipd-mf+text", {"icl", "pmd", "pfr", "det_class", "det_l1", "det_giou"}),
    ({"ipd": "oracle", "pfr": False}, "icl+pmd+ipd-oracle+text", {"icl", "pmd"}),
    ({"pmd": False, "pfr": False, "ipd": "none"}, "icl+text", {"icl"}),
    ({"pmd_anchor": "clip", "ipd": "none", "text": False}, "icl+pmd-clip+pfr-ln", {"icl", "pmd_clip", "pfr"}),
    (
        {"pmd_anchor": "both", "pfr": False},
        "icl+pmd-both+ipd+text",
        {"icl", "pmd", "pmd_clip", "det_class", "det_l1", "det_giou"},
    ),
]


@pytest.mark.parametrize("overrides, label, keys", VARIANTS, ids=[v[1] for v in VARIANTS])
def test_every_ablation_builds_and_trains_a_step(overrides: dict, label: str, keys: set) -> None:
    torch.manual_seed(0)
    m = small_rice(**overrides)
    assert m.variant() == label
    assert m.supports_rerank == m.cfg.pmd
    opt = torch.optim.AdamW(m.parameter_groups(1e-3, 1e-3, 0.0))
    batch = toy_batch()
    losses = m.training_losses(batch)
    assert set(losses) == keys
    total = sum(losses.values())
    assert bool(torch.isfinite(total))
    opt.zero_grad()
    total.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(gr).all()) for gr in grads)
    assert next(m.encoder.visual.conv1.parameters()).grad.abs().sum() > 0
    if m.pmd is not None:
        assert m.pmd.match.weight.grad.abs().sum() > 0
    if m.pfr is not None:
        assert m.pfr.convs[0].weight.grad.abs().sum() > 0
    if m.detector is not None:
        assert m.detector.box_head.layers[-1].weight.grad.abs().sum() > 0
    opt.step()
    m.eval()
    with torch.no_grad():
        q, g = m.encode_query(batch), m.encode_gallery(batch)
        assert bool(torch.isfinite(m.rerank(q, g)).all())
        assert (len(q.extras) > 0) == m.cfg.pmd


def test_pmd_stop_grad_keeps_pmd_and_pfr_gradients_out_of_the_encoder() -> None:
    """The analysis switch: PMD and PFR still learn, the shared encoder gets only ICL's gradient."""
    batch = toy_batch()
    grads = {}
    for stop in (False, True):
        torch.manual_seed(0)
        m = small_rice(ipd="none", text=False, pmd_stop_grad=stop)
        losses = m.training_losses(batch)
        (losses["pmd"] + losses["pfr"]).backward()
        grads[stop] = next(m.encoder.visual.conv1.parameters()).grad
        assert m.pmd.match.weight.grad.abs().sum() > 0 and m.pfr.convs[0].weight.grad.abs().sum() > 0
        assert m.variant() == ("icl+pmd-sg+pfr-ln" if stop else "icl+pmd+pfr-ln")
    assert grads[False].abs().sum() > 0 and (grads[True] is None or float(grads[True].abs().sum()) == 0.0)


def test_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="pfr=true needs pmd=true"):
        small_rice(pmd=False)
    with pytest.raises(ValueError, match="pfr_target='l2': expected one of raw, layernorm"):
        small_rice(pfr_target="l2")
    with pytest.raises(ValueError, match="ipd='yolo': expected one of none, single, multi, oracle"):
        small_rice(ipd="yolo")
    info = DataInfo(num_products=5, num_categories=1, num_frames=3, image_size=224)
    with pytest.raises(ValueError, match="112 px but the data profile crops 224"):
        build_method(Rice, "tiny", info, SMALL)


def test_paper_profile_refuses_a_random_encoder(tmp_path) -> None:
    info = DataInfo(num_products=5, num_categories=1, num_frames=10, image_size=224)
    with pytest.raises(ValueError, match="needs pretrained CLIP weights"):
        build_method(Rice, "paper", info, {"encoder.pretrained": None})
    # a local weights file that is not there is an error too (no network touched)
    with pytest.raises(EncoderLoadError, match="no such file"):
        small_rice(**{"encoder.pretrained": str(tmp_path / "missing.pt")})


def test_parameter_groups_split_encoder_and_new_modules() -> None:
    m = small_rice()
    groups = m.parameter_groups(1e-6, 1e-4, 0.2)
    by_id = {id(p): gr for gr in groups for p in gr["params"]}
    assert by_id[id(m.logit_scale)]["lr"] == 1e-6 and by_id[id(m.logit_scale)]["weight_decay"] == 0.0
    assert by_id[id(next(m.encoder.visual.conv1.parameters()))]["lr"] == 1e-6
    assert by_id[id(m.encoder.text_tower.text_projection)]["lr"] == 1e-6  # the text tower is pretrained
    for mod in (
        m.pmd.cross_layer.in_proj_weight,
        m.pmd.match.weight,
        m.pfr.convs[0].weight,
        m.detector.class_head.weight,
        m.text_token.weight,
    ):
        assert by_id[id(mod)]["lr"] == 1e-4
    assert id(m.encoder.logit_scale) not in by_id  # frozen: RICE's own scale is used
    assert float(m.logit_scale.detach().exp()) == pytest.approx(16.0)


def test_pmd_starts_from_the_encoders_last_two_blocks() -> None:
    m = small_rice()
    blocks = m.encoder.visual.transformer.resblocks
    assert torch.equal(m.pmd.self_layer.in_proj_weight, blocks[-2].attn.in_proj_weight)
    assert torch.equal(m.pmd.cross_layer.mlp.c_fc.weight, blocks[-1].mlp.c_fc.weight)
    assert m.pmd.self_layer.in_proj_weight.data_ptr() != blocks[-2].attn.in_proj_weight.data_ptr()


@torch.no_grad()
def test_cross_attention_maps_and_missing_queries() -> None:
    m = small_rice(ipd="oracle")
    batch = toy_batch()
    clip = {k: v[1:2] for k, v in batch.items()}
    maps = m.cross_attention_maps(clip, {"image": batch["image"][1:2], "title": batch["title"][1:2]})
    assert maps.shape == (3, 7, 7) and m.training
    assert float(maps[2].abs().sum()) == 0.0  # the padding frame
    assert bool((maps >= 0).all()) and 0.0 < float(maps.sum()) <= 1.0 + 1e-5
    m.eval()
    empty = toy_batch()
    empty["frame_mask"][:] = False
    q = m.encode_query(empty)
    assert bool(torch.isfinite(q.embedding).all())
    assert bool(torch.isfinite(m.rerank(q, m.encode_gallery(batch))).all())
    boxes, found = m.intent_boxes(batch)
    assert boxes.shape == (4, 3, 4) and torch.equal(found, batch["box_mask"] & batch["frame_mask"])


def test_detector_trains_on_a_window_of_real_frames() -> None:
    torch.manual_seed(0)
    m = small_rice(num_frames=5, det_train_frames=2)
    batch = toy_batch(b=4, t=5)
    batch["frame_mask"][2, 3:] = False  # clip 2 has 3 real frames
    seen = []
    m.detector.register_forward_hook(lambda mod, args, out: seen.append(args))
    for _ in range(10):
        m.training_losses(batch)
    assert len(seen) == 10  # one detector pass a step (training masks use the ground truth)
    for tokens, frame_mask, first in seen:
        assert tokens.shape[:2] == (4, 2) and frame_mask.shape == (4, 2)
        assert int(first[2]) <= 1 and int(first[1]) <= 2 and int(first.max()) <= 3
        assert bool(frame_mask[2].all())  # the window stays inside the real frames
    assert len({int(a[2][0]) for a in seen}) > 1  # the window moves
    m.eval()
    seen.clear()
    with torch.no_grad():
        m.encode_query(batch)
    assert seen[0][0].shape[:2] == (4, 5) and seen[0][2] is None  # test time: every frame
