"""Transforms: boxes follow the pixels through eval and train geometry; one transform per clip."""

from __future__ import annotations

import pytest
import torch

from datasets import transforms as T


def _frame(w: int, h: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    img = torch.full((3, h, w), 40, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = 255
    return img


def _bright_bbox(img: torch.Tensor) -> tuple[float, float, float, float] | None:
    ys, xs = torch.nonzero(img.float().mean(0) > 200, as_tuple=True)
    if len(xs) == 0:
        return None
    return (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1)


def test_eval_box_matches_hand_computation():
    # 96x64 frame, resize shorter side to 256 -> 384x256, center crop 224 -> offsets (80, 16)
    boxes, valid = T.normalise_boxes([(8, 6, 40, 30), None], [(96, 64), (96, 64)])
    out, ok = T.eval_boxes(boxes, valid, [(96, 64), (96, 64)], 256, 224)
    expected = torch.tensor([0.0, (24 - 16) / 224, (160 - 80) / 224, (120 - 16) / 224])
    assert torch.allclose(out[0], expected, atol=1e-6)
    assert ok.tolist() == [True, False] and out[1].abs().sum() == 0


def test_eval_geometry_pixels_follow_box():
    box = (50, 20, 110, 70)
    frame = _frame(160, 100, box)
    pix = T.eval_geometry([frame], 128, 112)[0]
    b, v = T.normalise_boxes([box], [(160, 100)])
    nb, ok = T.eval_boxes(b, v, [(160, 100)], 128, 112)
    got = _bright_bbox(pix)
    assert ok.item() and got is not None
    assert torch.allclose(torch.tensor(got, dtype=torch.float32), nb[0] * 112, atol=2.0)


# sampled crops (the box is inside every one of these), and two crops beside the box
OUTSIDE = {
    "left-of-box": T.TrainCrop(0.0, 0.0, 0.25, 0.5, flip=False),
    "below-box": T.TrainCrop(0.2, 0.75, 0.6, 0.25, flip=True),
}


@pytest.mark.parametrize("case", [*range(12), *OUTSIDE])
def test_train_geometry_pixels_follow_box_and_frames_share_transform(case):
    box = (50, 20, 110, 70)
    frames = [_frame(160, 100, box), _frame(160, 100, box), _frame(80, 50, (25, 10, 55, 35))]
    crop = OUTSIDE[case] if case in OUTSIDE else T.sample_train_crop(160, 100, torch.Generator().manual_seed(case))
    pix = T.train_geometry(frames, crop, 64)
    assert pix.shape == (3, 3, 64, 64)
    assert torch.equal(pix[0], pix[1])  # same geometric transform on every frame of the clip
    assert (pix[0].float() - pix[2].float()).abs().mean() < 12  # half-size frame, same normalised crop
    b, v = T.normalise_boxes([box], [(160, 100)])
    nb, ok = T.train_boxes(b, v, crop)
    got = _bright_bbox(pix[0])
    # the box's overlap with the crop window, in source pixels: what ``ok`` must say
    overlap_w = min(box[2], (crop.x0 + crop.w) * 160) - max(box[0], crop.x0 * 160)
    overlap_h = min(box[3], (crop.y0 + crop.h) * 100) - max(box[1], crop.y0 * 100)
    assert ok.item() == (overlap_w > 0 and overlap_h > 0) == (case not in OUTSIDE), (crop, ok)
    if ok.item():
        assert got is not None
        assert torch.allclose(torch.tensor(got, dtype=torch.float32), nb[0] * 64, atol=2.5), (crop, got, nb[0] * 64)
    else:
        assert got is None and nb[0].abs().sum() == 0  # nothing of the box in the pixels, a zero box


def test_flip_mirrors_box():
    crop = T.TrainCrop(0.0, 0.0, 1.0, 1.0, flip=True)
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.6]])
    out, ok = T.train_boxes(boxes, torch.tensor([True]), crop)
    assert torch.allclose(out[0], torch.tensor([0.7, 0.2, 0.9, 0.6])) and ok.item()


def test_box_outside_crop_is_invalid():
    crop = T.TrainCrop(0.5, 0.5, 0.5, 0.5, flip=False)
    out, ok = T.train_boxes(torch.tensor([[0.0, 0.0, 0.3, 0.3]]), torch.tensor([True]), crop)
    assert not ok.item() and out.abs().sum() == 0


def test_train_crop_respects_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        c = T.sample_train_crop(300, 200, g)
        area = c.w * c.h
        assert 0.5 - 0.02 <= area <= 1.0 + 1e-6
        assert 0 <= c.x0 and c.x0 + c.w <= 1 + 1e-6 and 0 <= c.y0 and c.y0 + c.h <= 1 + 1e-6
        assert 0.75 - 0.03 <= (c.w * 300) / (c.h * 200) <= 4 / 3 + 0.03


def test_to_float_uses_clip_statistics():
    x = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    out = T.to_float(x, mean, std)
    assert torch.allclose(out[:, 0, 0], torch.tensor([(1 - m) / s for m, s in zip(mean, std)]))


def test_resize_smaller_than_crop_is_rejected():
    with pytest.raises(ValueError, match="smaller than image_size"):
        T.eval_geometry([torch.zeros(3, 10, 10, dtype=torch.uint8)], 100, 112)


def test_square_resize_keeps_a_portrait_frame_whole_and_boxes_follow():
    # the official eval transform: Resize([256, 256]) (aspect not kept), CenterCrop(224)
    frame = torch.zeros(3, 160, 90, dtype=torch.uint8)
    frame[:, 140:, :] = 255  # a product at the bottom of a 9:16 frame
    box = torch.tensor([[0.0, 140 / 160, 1.0, 1.0]])
    valid = torch.tensor([True])
    square = T.eval_geometry([frame], 64, 64, "square")[0]
    assert square.shape == (3, 64, 64) and square[:, -3:, :].float().mean() > 200  # the bottom survives
    nb, ok = T.eval_boxes(box, valid, [(90, 160)], 64, 64, "square")
    assert ok.tolist() == [True] and torch.allclose(nb[0], torch.tensor([0.0, 0.875, 1.0, 1.0]))
    # 256 -> 224: the box follows the same resize and crop
    nb, ok = T.eval_boxes(box, valid, [(90, 160)], 256, 224, "square")
    assert torch.allclose(nb[0], torch.tensor([0.0, (0.875 * 256 - 16) / 224, 1.0, 1.0]))
    # aspect kept, shorter side: 64 x 113, the center crop cuts the bottom 24 rows and the box with them
    shorter = T.eval_geometry([frame], 64, 64, "shorter")[0]
    assert shorter[:, -3:, :].float().mean() < 5
    nb, ok = T.eval_boxes(box, valid, [(90, 160)], 64, 64, "shorter")
    assert ok.tolist() == [False]


def test_paper_profile_resizes_the_whole_frame():
    from benchmark.core.config import get_profile

    assert get_profile("paper").data.resize_mode == "square" and get_profile("tiny").data.resize_mode == "shorter"
