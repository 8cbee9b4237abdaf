"""IPD: box -> patch keep-mask, Hungarian matching, detection loss, the two detectors."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import box_convert, box_iou

from methods.ipd import (
    SetDetector,
    boxes_to_patch_keep,
    cell_box_iou,
    detection_loss,
    hungarian_match,
    patch_cells,
    predict_boxes,
)

G = 7
from tests.rice_fixtures import one_thread  # noqa: F401 (autouse fixture)


def test_patch_cells_are_row_major_vit_order() -> None:
    cells = patch_cells(G)
    assert cells.shape == (49, 4)
    # token 1 + i*7 + j is row i, column j: index 8 = row 1, column 1
    assert torch.allclose(cells[8], torch.tensor([1 / 7, 1 / 7, 2 / 7, 2 / 7]))
    assert torch.allclose(cells[6], torch.tensor([6 / 7, 0.0, 1.0, 1 / 7]))


def test_cell_iou_agrees_with_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(5, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(5, 2, generator=g) * 0.4], dim=1)
    assert torch.allclose(cell_box_iou(boxes, G), box_iou(boxes, patch_cells(G)), atol=1e-6)


def test_box_on_one_cell_keeps_that_patch_and_cls() -> None:
    box = torch.tensor([[2 / 7, 3 / 7, 3 / 7, 4 / 7]])  # exactly row 3, column 2
    keep = boxes_to_patch_keep(box, torch.tensor([True]), G)
    assert keep.shape == (1, 50)
    assert keep[0].nonzero().flatten().tolist() == [0, 1 + 3 * 7 + 2]


def test_iou_threshold_and_all_kept_fallback() -> None:
    side = 1 / 7
    # a small box inside cell (0, 0): IoU = its area / the cell's area
    big_enough = torch.tensor([[0.0, 0.0, side * 0.2, side * 0.15]])  # IoU 0.03 >= 0.02
    too_small = torch.tensor([[0.0, 0.0, side * 0.1, side * 0.1]])  # IoU 0.01 < 0.02
    kept = boxes_to_patch_keep(big_enough, torch.tensor([True]), G, 0.02)
    assert kept[0].nonzero().flatten().tolist() == [0, 1]
    fallback = boxes_to_patch_keep(too_small, torch.tensor([True]), G, 0.02)
    assert bool(fallback.all())  # nothing reached the threshold -> every patch kept
    # a stricter threshold turns the first case into the fallback too
    assert bool(boxes_to_patch_keep(big_enough, torch.tensor([True]), G, 0.05).all())


def test_whole_frame_box_reaches_one_over_49() -> None:
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert torch.allclose(cell_box_iou(full, G), torch.full((1, 49), 1 / 49))
    assert bool(boxes_to_patch_keep(full, torch.tensor([True]), G, 0.02).all())


def test_frames_without_box_keep_everything_and_batch_shapes() -> None:
    boxes = torch.tensor([0.5, 0.5, 0.6, 0.6]).repeat(2, 3, 1)
    has = torch.tensor([[True, False, True], [False, False, False]])
    keep = boxes_to_patch_keep(boxes, has, G)
    assert keep.shape == (2, 3, 50)
    assert bool(keep[:, :, 0].all())  # CLS always
    assert bool(keep[0, 1].all()) and bool(keep[1].all())
    assert int(keep[0, 0].sum()) < 50


def test_hungarian_matches_the_optimal_assignment() -> None:
    targets = torch.tensor([[0.30, 0.5, 0.2, 0.2], [0.50, 0.5, 0.2, 0.2]])
    preds = torch.tensor([[0.42, 0.5, 0.2, 0.2], [0.29, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]])
    logits = torch.zeros(1, 3, 2)
    ((rows, cols),) = hungarian_match(logits, preds[None], [targets])
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 0}
    # brute force over all injective assignments agrees on the total cost
    from torchvision.ops import generalized_box_iou

    def cost(q: int, t: int) -> float:
        l1 = (preds[q] - targets[t]).abs().sum()
        giou = generalized_box_iou(
            box_convert(preds[q : q + 1], "cxcywh", "xyxy"), box_convert(targets[t : t + 1], "cxcywh", "xyxy")
        )
        return float(5 * l1 - 2 * giou[0, 0] - 0.5)

    best = min(itertools.permutations(range(3), 2), key=lambda qs: sum(cost(q, t) for t, q in enumerate(qs)))
    assert list(best) == [1, 0]


def test_hungarian_prefers_confident_query_when_boxes_tie() -> None:
    tgt = torch.tensor([[0.5, 0.5, 0.3, 0.3]])
    preds = tgt.repeat(2, 1)[None]
    logits = torch.tensor([[[0.0, 2.0], [2.0, 0.0]]])  # query 1 is confident
    ((rows, cols),) = hungarian_match(logits, preds, [tgt])
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_detection_loss_is_zero_for_perfect_boxes_and_ignores_unlabelled_frames() -> None:
    gt = torch.tensor([[[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]]])
    valid = torch.tensor([[True, False]])
    boxes = torch.rand(1, 2, 3, 4)
    boxes[0, 0, 2] = box_convert(gt[0, 0], "xyxy", "cxcywh")
    logits = torch.zeros(1, 2, 3, 2, requires_grad=True)
    loss = detection_loss(logits, boxes, gt, valid)
    assert float(loss["l1"]) == pytest.approx(0.0, abs=1e-6)
    assert float(loss["giou"]) == pytest.approx(0.0, abs=1e-6)
    sum(loss.values()).backward()
    assert logits.grad[0, 1].abs().sum() == 0  # the unlabelled frame gets no gradient
    assert logits.grad[0, 0].abs().sum() > 0
    none = detection_loss(logits, boxes, gt, torch.zeros(1, 2, dtype=torch.bool))
    assert all(float(v.detach()) == 0.0 for v in none.values())


def test_predict_boxes_takes_best_query_and_thresholds() -> None:
    logits = torch.tensor([[[[0.0, 3.0], [3.0, 0.0]], [[0.0, 3.0], [0.0, 3.0]]]])  # [1, 2, 2, 2]
    boxes = torch.tensor([[[[0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.4, 0.2]]] * 2])
    xyxy, found = predict_boxes(logits, boxes, 0.5)
    assert found.tolist() == [[True, False]]
    assert torch.allclose(xyxy[0, 0], torch.tensor([0.3, 0.4, 0.7, 0.6]))


@pytest.mark.parametrize("temporal", [0, 1])
def test_detectors_shapes_and_padding_frames_do_not_leak(temporal: int) -> None:
    torch.manual_seed(0)
    det = SetDetector(
        width=16, num_tokens=50, max_frames=4, dim=16, queries=3, layers=1, heads=2, temporal_layers=temporal
    ).eval()
    tokens = torch.randn(2, 4, 50, 16)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    logits, boxes = det(tokens, mask)
    assert logits.shape == (2, 4, 3, 2) and boxes.shape == (2, 4, 3, 4)
    assert bool(((boxes >= 0) & (boxes <= 1)).all())
    changed = tokens.clone()
    changed[~mask] = torch.randn_like(changed[~mask])
    logits2, boxes2 = det(changed, mask)
    assert torch.allclose(logits[mask], logits2[mask], atol=1e-5)
    assert torch.allclose(boxes[mask], boxes2[mask], atol=1e-5)
    if temporal:  # the multi-frame detector does look at the other (real) frames
        other = tokens.clone()
        other[0, 1] = torch.randn_like(other[0, 1])
        assert not torch.allclose(det(other, mask)[0][0, 0], logits[0, 0])


def test_window_offset_moves_the_temporal_positions() -> None:
    torch.manual_seed(0)
    multi = SetDetector(
        width=16, num_tokens=50, max_frames=6, dim=16, queries=2, layers=1, heads=2, temporal_layers=1
    ).eval()
    single = SetDetector(width=16, num_tokens=50, max_frames=6, dim=16, queries=2, layers=1, heads=2).eval()
    tokens, mask = torch.randn(1, 3, 50, 16), torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        assert not torch.allclose(multi(tokens, mask)[0], multi(tokens, mask, torch.tensor([2]))[0])
        assert torch.allclose(single(tokens, mask)[0], single(tokens, mask, torch.tensor([2]))[0])
        with pytest.raises(ValueError, match="built for 6 frames"):
            multi(tokens, mask, torch.tensor([4]))


# --- the vectorised matcher and loss against the per-frame Hungarian reference ---------------
def _reference_loss(logits, boxes, gt, valid, eos_coef=0.1):
    """The detection loss as computed before vectorising: labelled frames selected, scipy's
    assignment per frame, torchvision's pairwise GIoU (the DETR recipe, written out)."""
    fl, fb = logits.flatten(0, 1)[valid.flatten()], boxes.flatten(0, 1)[valid.flatten()]
    tgt = box_convert(gt.flatten(0, 1)[valid.flatten()].float().clamp(0, 1), "xyxy", "cxcywh")
    if len(tgt) == 0:
        return {"class": 0.0, "l1": 0.0, "giou": 0.0}
    match = hungarian_match(fl, fb, [t[None] for t in tgt])
    qry = torch.cat([q for q, _ in match])
    labels = torch.ones(fl.shape[:2], dtype=torch.long)
    labels[torch.arange(len(qry)), qry] = 0
    ce = torch.nn.functional.cross_entropy(fl.float().transpose(1, 2), labels, weight=torch.tensor([1.0, eos_coef]))
    pred = fb[torch.arange(len(qry)), qry].float()
    l1 = (pred - tgt).abs().sum() / len(tgt)
    from torchvision.ops import generalized_box_iou

    giou = torch.diag(generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))
    return {"class": float(ce), "l1": 5 * float(l1), "giou": 2 * float((1 - giou).sum() / len(tgt))}


def _random_case(g, b=3, t=4, q=5):
    logits = torch.randn(b, t, q, 2, generator=g)
    boxes = torch.rand(b, t, q, 4, generator=g) * 0.5 + 0.1  # cxcywh inside the frame
    xy = torch.rand(b, t, 2, generator=g) * 0.5
    gt = torch.cat([xy, xy + 0.1 + torch.rand(b, t, 2, generator=g) * 0.4], dim=-1)
    valid = torch.rand(b, t, generator=g) < 0.6
    return logits, boxes, gt, valid


def test_single_target_matcher_equals_scipys_assignment_on_random_cases() -> None:
    from methods.ipd import match_single_target

    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits, boxes, gt, _ = _random_case(g)
        fl, fb = logits.flatten(0, 1), boxes.flatten(0, 1)
        tgt = box_convert(gt.flatten(0, 1), "xyxy", "cxcywh")
        want = torch.cat([q for q, _ in hungarian_match(fl, fb, [x[None] for x in tgt])])
        assert torch.equal(match_single_target(fl, fb, tgt), want)


def test_vectorised_detection_loss_equals_the_per_frame_reference() -> None:
    """Same values as the per-frame Hungarian computation (float32 summation order: 1e-6)."""
    g = torch.Generator().manual_seed(1)
    for i in range(30):
        logits, boxes, gt, valid = _random_case(g)
        if i == 0:
            valid[:] = False  # no labelled frame: zeros
        got = detection_loss(logits, boxes, gt, valid)
        want = _reference_loss(logits, boxes, gt, valid)
        for k in ("class", "l1", "giou"):
            assert float(got[k]) == pytest.approx(want[k], rel=1e-6, abs=1e-6), (i, k)


def test_detection_loss_reaches_both_heads_without_a_labelled_frame() -> None:
    """Zero loss, yet the box head's output is in the graph (DDP without unused parameters)."""
    logits = torch.randn(1, 2, 3, 2, requires_grad=True)
    boxes = torch.rand(1, 2, 3, 4, requires_grad=True)
    out = detection_loss(logits, boxes, torch.rand(1, 2, 4), torch.zeros(1, 2, dtype=torch.bool))
    sum(out.values()).backward()
    assert all(float(v.detach()) == 0.0 for v in out.values())
    assert boxes.grad is not None and logits.grad is not None
