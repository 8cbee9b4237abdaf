"""SEAM Match-RCNN (tiny and paper profiles): the paper's detector is torchvision's Mask R-CNN
R50-FPN (built on the meta device: no memory, no weights), the match head, non-local block,
aggregator and weak match targets, the tracker, the training losses and epoch schedule, the
second phase, the loss falls on a fixed toy batch, encoding and re-ranking, a frozen detector,
weight errors, detection and aggregation rules, chunked detection.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

from methods.base import DataInfo, build_method
from methods.encoders import EncoderLoadError
from methods.seam_match_rcnn import (
    MatchHead,
    NonLocal1D,
    SeamMatchRCNN,
    TemporalAggregator,
    build_detector,
    weak_match_targets,
)
from tests.baseline_fixtures import aggregated_clips, n_params, seam_batch, seam_tiny, train_steps


def test_seam_paper_detector_is_torchvision_maskrcnn_resnet50_fpn():
    cfg = SeamMatchRCNN.default_config("paper")
    with torch.device("meta"):
        # random init follows torchvision's builder: BatchNorm, all 5 stages trainable ...
        model = build_method(SeamMatchRCNN, "paper", DataInfo(10, 2, 10, 224), {"pretrained": "none"})
        ref = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
        # ... and with weights: FrozenBatchNorm, 3 trainable stages (built here without loading any)
        frozen = build_detector(
            dataclasses.replace(cfg, pretrained=None, norm="frozen_bn", trainable_backbone_layers=3)
        )
    named = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert named(model.encoder) == named(ref)  # the same modules and shapes as torchvision's R50-FPN
    assert n_params(model.encoder) == n_params(ref)
    assert 43e6 < n_params(ref) < 45e6  # Mask R-CNN R50-FPN: ~44M
    bn_free = {k: v for k, v in named(ref).items() if not k.endswith("num_batches_tracked")}
    assert named(frozen) == bn_free  # so torchvision's COCO state dict fits key for key
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    frozen_names = [n for n, p in frozen.named_parameters() if not p.requires_grad]
    assert any(n.startswith("backbone.body.layer1.") for n in frozen_names)  # 3 trainable stages
    assert not any(n.startswith("backbone.body.layer2.") for n in frozen_names)
    # SEAM's heads: 3 x conv(256, 256) + conv(256, 1024) + Linear(1024, 256) + BN + Linear(256, 2)
    head = 3 * (256 * 256 * 9 + 256) + (256 * 1024 * 9 + 1024) + (1024 * 256 + 256) + 2 * 256 + (256 * 2 + 2)
    assert n_params(model.match_head) == head
    nlb = 3 * (256 * 128 + 128) + 256 + (128 * 256 + 256)
    assert n_params(model.aggregator) == head + nlb + 257
    assert model.encoder.transform.min_size == (800,) and model.encoder.transform.max_size == 1333
    # the mask branch is frozen (no masks); SEAM's features come from its RoI pooler
    assert all(not p.requires_grad for p in model.encoder.roi_heads.mask_head.parameters())


def test_match_head_shapes_and_cross_logits_equal_pairwise():
    torch.manual_seed(0)
    head = MatchHead(8, 16, 6).eval()
    roi = torch.randn(5, 8, 14, 14)
    emb = head.embed(roi)
    assert emb.shape == (5, 6)
    a, b = torch.randn(4, 6), torch.randn(3, 6)
    cross = head.cross_logits(a, b)
    direct = head.pair_logits(a[:, None].expand(4, 3, 6).reshape(-1, 6), b[None].expand(4, 3, 6).reshape(-1, 6))
    assert cross.shape == (4, 3, 2)
    assert torch.allclose(cross.reshape(-1, 2), direct, atol=1e-5)


def test_nonlocal_block_identity_at_init_masking_and_single_frames():
    torch.manual_seed(0)
    nlb = NonLocal1D(6)
    x = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert torch.equal(nlb(x, mask), x)  # output conv zero-initialised
    torch.nn.init.normal_(nlb.w.weight)
    y = nlb(x, mask)
    assert not torch.allclose(y[0, :3], x[0, :3])
    assert torch.equal(y[1], x[1])  # one real frame: SEAM skips the block
    x2 = x.clone()
    x2[0, 3] = 50.0  # padding does not reach the real frames
    assert torch.allclose(nlb(x2, mask)[0, :3], y[0, :3], atol=1e-6)


def test_aggregator_attention_pools_real_frames_only():
    torch.manual_seed(0)
    agg = TemporalAggregator(8, 16, 6)
    feats = torch.randn(3, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True] * 4, [False] * 4])
    out = agg.aggregate(feats, mask)
    att = torch.softmax(agg.attention(feats[0, :2]).squeeze(-1), 0)
    assert torch.allclose(out[0], (att[:, None] * feats[0, :2]).sum(0), atol=1e-6)
    assert torch.equal(out[2], torch.zeros(6))


def test_weak_match_targets_mark_the_best_box_of_each_frame():
    inf = float("-inf")
    # 2 frames (clip products 0 and 1), up to 3 boxes, 2 shops (products 0 and 1)
    scores = torch.tensor(
        [
            [[0.1, 0.9], [2.0, -1.0], [0.5, 3.0]],  # frame 0: box 1 is best for shop 0
            [[1.0, 0.2], [0.0, 0.7], [inf, inf]],  # frame 1 has 2 boxes: box 1 is best for shop 1
        ]
    )
    same = torch.tensor([[True, False], [False, True]])
    target, best = weak_match_targets(scores, same, threshold=-10.0)
    assert best.tolist() == [[1, 2], [0, 1]]
    expected = torch.zeros(2, 3, 2, dtype=torch.long)
    expected[0, 1, 0] = 1
    expected[1, 1, 1] = 1
    assert torch.equal(target, expected)
    target, _ = weak_match_targets(scores, same, threshold=1.0)  # frame 1's best (0.7) is below it
    assert int(target.sum()) == 1 and target[0, 1, 0] == 1


def test_seam_tracker_follows_seam_greedy_rule():
    torch.manual_seed(0)
    model = seam_tiny(tracking_threshold=0.3)
    with torch.no_grad():  # logit(match) - logit(no match) = 1 - |a - b|^2
        model.match_head.last.weight.copy_(torch.stack([torch.zeros(32), -torch.ones(32)]))
        model.match_head.last.bias.copy_(torch.tensor([0.0, 1.0]))
    e = torch.zeros(32)
    at = lambda v: e + torch.nn.functional.one_hot(torch.tensor(0), 32) * v  # noqa: E731  point on axis 0
    feats = [
        torch.stack([at(0.0), at(9.0)]),  # frame 0: A (confident), X (far)
        torch.stack([at(5.0), at(0.3)]),  # frame 1: far box, B (close to A)
        torch.stack([at(1.0)]),  # frame 2: C, |C-A|^2 = 1 (p = 0.5), |C-B|^2 = 0.49
        torch.stack([at(3.0)]),  # frame 3: D, |D-C|^2 = 4 (p = 0.05): below the threshold
    ]
    scores = [torch.tensor([0.9, 0.8]), torch.tensor([0.7, 0.2]), torch.tensor([0.3]), torch.tensor([0.05])]
    assert model.track(feats, scores) == {0: 0, 1: 1, 2: 0}
    # the tracklet starts at the most confident detection: here the far box X, which nothing joins
    scores[0] = torch.tensor([0.9, 0.99])
    assert model.track(feats, scores) == {0: 1}


@pytest.fixture(scope="module")
def seam():
    torch.manual_seed(0)
    return seam_tiny()


def test_seam_training_losses_and_epoch_schedule(seam):
    batch = seam_batch()
    seam.train()
    seam.epoch, seam._warned_epoch = None, False
    with pytest.warns(RuntimeWarning, match="set_epoch"):
        losses = seam.training_losses(batch)
    assert set(losses) == {"match", "aggregation", "det_objectness", "det_rpn_box", "det_classifier", "det_box"}
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    seam.set_epoch(0)
    assert float(seam.training_losses(batch)["aggregation"].detach()) == 0.0  # off in epoch 0, as SEAM
    seam.set_epoch(1)
    assert float(seam.training_losses(batch)["aggregation"].detach()) > 0.0
    # no box in the batch: the detection losses are zero but keep the detector in the graph
    none = seam.training_losses(dict(batch, box_mask=torch.zeros(2, 3, dtype=torch.bool)))
    assert float(none["det_classifier"].detach()) == 0.0 and none["det_classifier"].requires_grad


def test_seam_phase_2_starts_the_aggregator_from_the_trained_match_head():
    """SEAM's load_saved_matchrcnn: when the aggregation loss turns on (epoch 1) the
    aggregator's match-head part is copied from the match head, once per run."""
    model = seam_tiny()
    head = dict(model.match_head.named_parameters())
    with torch.no_grad():
        for p in model.match_head.parameters():
            p.add_(1.0)  # stands for epoch 0's training of the match head
    model.on_epoch_start(0, 4)
    agg = dict(model.aggregator.named_parameters())
    assert not torch.equal(agg["fc.weight"], head["fc.weight"])
    model.on_epoch_start(1, 4)
    for name, p in head.items():
        torch.testing.assert_close(agg[name], p)
    assert bool(model.aggregator_from_head)
    with torch.no_grad():
        agg["fc.weight"].add_(1.0)  # the aggregator trains on in epoch 1
    resumed = seam_tiny()
    resumed.load_state_dict(model.state_dict())
    resumed.on_epoch_start(2, 4)  # a run resumed after the copy keeps its aggregator
    torch.testing.assert_close(resumed.aggregator.fc.weight, agg["fc.weight"])
    off = seam_tiny(aggregator_from_trained_head=False)
    before = off.aggregator.fc.weight.clone()
    with torch.no_grad():
        off.match_head.fc.weight.add_(1.0)
    off.on_epoch_start(1, 4)
    torch.testing.assert_close(off.aggregator.fc.weight, before)


def test_seam_strong_pairs_in_epoch_0_take_the_ground_truth_boxes():
    assert SeamMatchRCNN.default_config("tiny").strong_pair_epochs == 0  # SEAM's weak pairs by default
    torch.manual_seed(0)
    model = seam_tiny(strong_pair_epochs=1)
    model.train()
    batch = seam_batch(3, short=False)
    batch["box_mask"] = torch.ones(3, 3, dtype=torch.bool)
    moved = dict(batch, boxes=(batch["boxes"] * 0.5).clamp(0, 1))

    def match(b: dict, epoch: int) -> float:
        model.set_epoch(epoch)
        torch.manual_seed(1)
        return float(model.training_losses(b)["match"].detach())

    # epoch 0: the match loss is computed on the RoIs at the boxes; later, SEAM's weak pairs ignore them
    assert abs(match(batch, 0) - match(moved, 0)) > 1e-4
    assert abs(match(batch, 1) - match(moved, 1)) < 1e-6
    # frames without a box keep the weak pairs: with no box at all, epoch 0 equals the weak loss
    unboxed = dict(batch, box_mask=torch.zeros(3, 3, dtype=torch.bool))
    assert abs(match(unboxed, 0) - match(unboxed, 1)) < 1e-6


def test_seam_loss_falls():
    torch.manual_seed(0)
    model = seam_tiny()
    model.set_epoch(1)
    losses = train_steps(model, seam_batch(short=False), steps=4)
    assert min(losses[-2:]) < losses[0] - 0.3, losses


def test_seam_encode_and_rerank(seam):
    seam.eval()
    batch = seam_batch(3)
    with torch.no_grad():
        q = seam.encode_query(batch)
        g = seam.encode_gallery(batch)
        assert q.embedding.shape == (3, 32) and g.embedding.shape == (3, 32)
        assert set(q.extras) == {"seam"} and set(g.extras) == {"seam"}
        qi = torch.tensor([0, 0, 1, 2, 2])
        gi = torch.tensor([0, 1, 2, 0, 2])
        scores = seam.rerank(q.select(qi), g.select(gi))
        assert scores.shape == (5,)
        logits = seam.aggregator.cross_logits(q.extras["seam"], g.extras["seam"])
        assert torch.allclose(scores, (logits[..., 1] - logits[..., 0])[qi, gi], atol=1e-4)
        empty = seam.encode_query(dict(batch, frame_mask=torch.zeros(3, 3, dtype=torch.bool)))
        assert torch.equal(empty.embedding, torch.zeros(3, 32))
        assert torch.isfinite(seam.rerank(empty, g)).all()


def test_seam_freeze_detector_trains_the_heads_only(tmp_path, seam):
    path = tmp_path / "seam.pt"
    torch.save(seam.state_dict(), path)
    frozen = seam_tiny(freeze_detector=True, pretrained=path)
    want, got = seam.encoder.state_dict(), frozen.encoder.state_dict()
    assert got.keys() == want.keys()  # paired by name: every tensor, none missing or extra
    for k, a in want.items():
        assert torch.equal(a, got[k]), k
    frozen.set_epoch(1)
    frozen.train()
    assert not frozen.encoder.training  # the detector stays in inference mode
    losses = frozen.training_losses(seam_batch())
    assert set(losses) == {"match", "aggregation"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in frozen.encoder.parameters())
    assert frozen.match_head.fc.weight.grad is not None and frozen.aggregator.fc.weight.grad is not None


def test_seam_weight_errors():
    with pytest.raises(EncoderLoadError, match="ResNet-50-FPN"):
        seam_tiny(pretrained="COCO_V1")
    with pytest.raises(EncoderLoadError, match="unknown MaskRCNN_ResNet50_FPN_Weights 'NOPE'"):
        with torch.device("meta"):
            build_method(SeamMatchRCNN, "paper", DataInfo(8, 2, 3, 224), {"pretrained": "NOPE"})
    with pytest.raises(ValueError, match="shop_box"):
        seam_tiny(shop_box="middle")
    assert math.isclose(SeamMatchRCNN.default_config("paper").aggregation_weights[1], 0.3)


def test_seam_detection_loss_uses_the_boxed_frames_drawn_per_clip():
    torch.manual_seed(0)
    batch = seam_batch(3, 3, short=False)
    batch["box_mask"] = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    for per_clip, expected in ((0, 4), (2, 3), (1, 2)):
        model = seam_tiny(detector_frames_per_clip=per_clip)
        model.set_epoch(0)
        seen = []
        rpn_forward = model.encoder.rpn.forward

        def record(images, features, targets=None, seen=seen, rpn_forward=rpn_forward):
            if targets is not None:
                seen.append(len(targets))
            return rpn_forward(images, features, targets)

        model.encoder.rpn.forward = record
        model.train().training_losses(batch)
        assert seen == [expected], (per_clip, seen)


def test_seam_profiles_follow_seams_code_in_paper_and_tiny():
    paper, tiny = SeamMatchRCNN.default_config("paper"), SeamMatchRCNN.default_config("tiny")
    # SEAM: candidates need a best logit > -10, any clip with a candidate (the aggregator's
    # n_frames stays -1), every detection at test (evaluate_movingfashion.py score_threshold=0.0)
    assert (paper.aggregation_candidates_above_threshold, paper.min_frames_aggregation, paper.test_score_thresh) == (
        True,
        1,
        0.0,
    )
    assert (tiny.aggregation_candidates_above_threshold, tiny.min_frames_aggregation, tiny.test_score_thresh) == (
        True,
        1,
        0.0,
    )
    assert paper.score_thresh == tiny.score_thresh == 0.1 and paper.match_threshold == -10.0


def test_seam_aggregation_candidates_and_minimum_frame_count():
    batch = seam_batch(3, 3)  # clip 0 has 2 real frames, clips 1-2 have 3
    torch.manual_seed(0)
    tiny_rules = seam_tiny(aggregation_candidates_above_threshold=False, min_frames_aggregation=3)
    assert aggregated_clips(tiny_rules, batch) == [[True] * 3, [True] * 3]  # clip 0 too short
    torch.manual_seed(0)
    every = seam_tiny(aggregation_candidates_above_threshold=True, min_frames_aggregation=1, match_threshold=-1e9)
    assert aggregated_clips(every, batch) == [[True, True, False], [True] * 3, [True] * 3]
    # a threshold no logit passes: no candidate frame, no clip, a zero loss that keeps the graph
    torch.manual_seed(0)
    none = seam_tiny(aggregation_candidates_above_threshold=True, min_frames_aggregation=1, match_threshold=1e9)
    assert aggregated_clips(none, batch) == []
    none.set_epoch(1)
    loss = none.training_losses(batch)["aggregation"]
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    # a threshold between the frames' best logits keeps exactly the frames above it
    torch.manual_seed(0)
    model = seam_tiny(aggregation_candidates_above_threshold=True, min_frames_aggregation=1)
    logits = []
    real = model.match_head.cross_logits
    model.match_head.cross_logits = lambda a, b: logits.append(real(a, b)) or logits[-1]
    model.set_epoch(1)
    model.train().training_losses(batch)
    model.match_head.cross_logits = real
    d = model._detect(torch.cat([batch["frames"][batch["frame_mask"]], batch["image"]]), 8)  # same detections
    counts = [bx.shape[0] for bx in d.boxes[:8]]
    own = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])  # the clip (and own shop) of each real frame
    best = torch.stack([lg[:, o, 1].max() for lg, o in zip(logits[0].detach().split(counts), own)])
    cut = float(best.median())
    torch.manual_seed(0)
    model = seam_tiny(aggregation_candidates_above_threshold=True, min_frames_aggregation=1, match_threshold=cut)
    expected = torch.zeros(3, 3, dtype=torch.bool)
    expected[batch["frame_mask"]] = best > cut
    kept = [row.tolist() for row in expected if row.any()]
    assert 0 < sum(map(sum, kept)) < 8 and aggregated_clips(model, batch) == kept


def test_seam_test_time_detections_use_their_own_threshold():
    """Training keeps detections scoring >= 0.1; encoding keeps every detection when
    ``test_score_thresh`` is 0.0 (SEAM's evaluation), only those >= 0.1 when it is None."""
    batch = seam_batch(1, 1, short=False)
    boxes = torch.tensor([[2.0, 2.0, 30.0, 30.0], [10.0, 10.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.07])
    kept = {}
    for thresh in (0.0, None):
        model = seam_tiny(test_score_thresh=thresh)
        model._inference = lambda image_list, features, sizes, index: {i: (boxes, scores) for i in index}
        model.eval()
        kept[thresh] = model._detect(batch["frames"][0], 1).boxes[0].shape[0]
        gt = (batch["boxes"][0], torch.zeros(1, dtype=torch.bool), torch.zeros(1, dtype=torch.long))
        kept[("train", thresh)] = model.train()._detect(batch["frames"][0], 1, gt=gt).boxes[0].shape[0]
    assert kept == {0.0: 2, None: 1, ("train", 0.0): 1, ("train", None): 1}


def test_seam_aggregator_nonlocal_block_learns_and_changes_the_clip_descriptor():
    """The aggregator's non-local block starts as the identity; a falling loss proves nothing
    about it: with the aggregation loss on, its output projection must receive gradient, and
    after one step the aggregated descriptor must differ from the one with the block bypassed."""
    torch.manual_seed(0)
    model = seam_tiny(aggregator_from_trained_head=False)
    model.set_epoch(1)
    model.train()
    batch = seam_batch(short=False)
    feats, mask = torch.randn(2, 3, 32), torch.ones(2, 3, dtype=torch.bool)
    nlb = model.aggregator.nlb
    assert torch.equal(nlb(feats, mask), feats)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    losses = model.training_losses(batch)
    assert float(losses["aggregation"].detach()) > 0
    opt.zero_grad()
    sum(losses.values()).backward()
    assert nlb.w.weight.grad is not None and nlb.w.weight.grad.abs().sum() > 0
    assert model.aggregator.attention.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        pooled = model.aggregator.aggregate(feats, mask)
        real = nlb.forward
        nlb.forward = lambda x, m: x
        try:
            bypassed = model.aggregator.aggregate(feats, mask)
        finally:
            nlb.forward = real
    assert (pooled - bypassed).abs().max() > 1e-6


def test_seam_encoding_in_detector_chunks_equals_one_call():
    """``detect_chunk`` bounds the images per detector call at test time (the paper profile's 11,
    SEAM's evaluation step) without changing what is encoded."""
    assert (
        SeamMatchRCNN.default_config("paper").detect_chunk == 11
        and SeamMatchRCNN.default_config("tiny").detect_chunk == 0
    )
    torch.manual_seed(0)
    whole = seam_tiny().eval()
    chunked = seam_tiny(detect_chunk=3).eval()
    chunked.load_state_dict(whole.state_dict())
    calls = []
    backbone = chunked.encoder.backbone
    real = backbone.forward
    backbone.forward = lambda x: calls.append(x.shape[0]) or real(x)
    batch = seam_batch(3, 3)  # 8 real frames
    with torch.no_grad():
        for side in ("encode_query", "encode_gallery"):
            a, b = getattr(whole, side)(batch), getattr(chunked, side)(batch)
            torch.testing.assert_close(b.embedding, a.embedding, atol=1e-4, rtol=1e-4)
    assert calls == [3, 3, 2, 3]  # 8 frames in chunks of 3, then 3 shop images


def test_seam_frozen_detector_runs_its_backbone_in_chunks_with_the_same_losses():
    """With the detector frozen (SEAM's second phase) the backbone runs without gradient,
    ``detect_chunk`` images at a time; the training losses are those of one call."""
    torch.manual_seed(0)
    whole = seam_tiny(freeze_detector=True)
    chunked = seam_tiny(freeze_detector=True, detect_chunk=4)
    chunked.load_state_dict(whole.state_dict())
    calls = []
    backbone = chunked.encoder.backbone
    real = backbone.forward
    backbone.forward = lambda x: calls.append(x.shape[0]) or real(x)
    batch = seam_batch(3, 3)  # 8 real frames + 3 shop images
    out = []
    for model in (whole, chunked):
        model.set_epoch(1)
        torch.manual_seed(1)
        out.append({k: float(v.detach()) for k, v in model.train().training_losses(batch).items()})
    assert calls == [4, 4, 3]
    assert out[0].keys() == out[1].keys() and all(
        out[0][k] == pytest.approx(out[1][k], rel=1e-4, abs=1e-5) for k in out[0]
    )
