"""The synthetic renderer: a clip's box is the tight box of the intent product, visibility and
distractor counts follow the clip's attributes, worn garments cover the torso."""

from __future__ import annotations

import numpy as np

from datasets.synthetic.catalog import COLOURS
from datasets.synthetic.knobs import Knobs
from datasets.synthetic.products import ProductSpec
from datasets.synthetic.scene import ALPHA_MIN, ClipAttrs, make_stage, render_clip


def _plain(category: int, colour: str) -> ProductSpec:
    return ProductSpec(
        category,
        colour,
        COLOURS[colour],
        colour,
        COLOURS[colour],
        "plain",
        10.0,
        0,
        "none",
        COLOURS[colour],
        COLOURS[colour],
        1.0,
        1.0,
        0.5,
    )


def test_box_is_the_tight_box_of_the_rendered_intent_product():
    knobs = Knobs(occlusion_rate=0.0, lighting=0.0, blur_rate=0.0, noise_std=0.0, rotation_deg=30.0)
    intent = _plain(1, "red")
    others = [_plain(1, "blue"), _plain(0, "green"), _plain(7, "yellow")]
    stage = make_stage(3, (128, 128), [], knobs, clean=True)
    seen = 0
    for seed, attrs in enumerate(
        [ClipAttrs("small", "long", "many"), ClipAttrs("large", "short", "few"), ClipAttrs("medium", "medium", "many")]
    ):
        r = render_clip(stage, intent, others, attrs, 10, knobs, seed, return_masks=True)
        for frame, box, mask in zip(r.frames, r.boxes, r.masks, strict=True):
            if box is None:
                assert mask is None
                continue
            ys, xs = np.nonzero(mask > ALPHA_MIN)
            assert box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)  # tight box of the pasted alpha
            core = frame[mask == 255].astype(float)
            # the opaque product pixels are the intent product's red (shaded), not a distractor's colour
            assert np.abs(np.median(core, axis=0) - np.array(COLOURS["red"])).max() < 30
            seen += 1
    assert seen >= 10


def test_visible_duration_and_distractor_count_follow_the_attributes():
    knobs = Knobs()
    stage = make_stage(5, (128, 128), [], knobs)
    specs = [_plain(1, c) for c in ("red", "blue", "green", "pink", "black", "white", "grey")]
    lo_n, hi_n = knobs.distractors[2]  # the plan draws a "many" clip's distractor count from here
    short = render_clip(stage, specs[0], specs[1 : 1 + hi_n], ClipAttrs("medium", "short", "many"), 20, knobs, 1)
    long = render_clip(stage, specs[0], [], ClipAttrs("medium", "long", "single"), 20, knobs, 1)
    n_short = sum(b is not None for b in short.boxes)
    n_long = sum(b is not None for b in long.boxes)
    lo_s, hi_s = knobs.duration_frac[0]
    lo_l, _ = knobs.duration_frac[2]
    assert round(lo_s * 20) - 1 <= n_short <= round(hi_s * 20) + 1 and n_long >= round(lo_l * 20) - 1
    assert all(lo_n <= len(d) <= hi_n for d in short.distractor_boxes) and all(
        len(d) == 0 for d in long.distractor_boxes
    )


def test_worn_garments_cover_the_torso():
    knobs = Knobs(lighting=0.0, noise_std=0.0, blur_rate=0.0)
    stage = make_stage(2, (96, 128), [], knobs, clean=True)
    torso_w = stage.torso[2] - stage.torso[0]
    for scale, frac in (("small", 1.3), ("large", 2.0)):
        r = render_clip(stage, _plain(0, "red"), [], ClipAttrs(scale, "long", "single", worn=True), 6, knobs, 0)
        widths = [b[2] - b[0] for b in r.boxes if b is not None]
        heights = [b[3] - b[1] for b in r.boxes if b is not None]
        assert widths and 0.8 * frac * torso_w <= max(max(widths), max(heights)) <= 1.25 * frac * torso_w
