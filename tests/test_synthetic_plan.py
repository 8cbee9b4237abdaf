"""The synthetic generator's plan: a long-tailed catalogue with hard negatives, MovingFashion's
regular and hard subsets, group sizes, the scale sizes' exact counts, forced colours, the knobs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from datasets.synthetic.catalog import category_prior
from datasets.synthetic.knobs import PRESETS, SIZES, Knobs, SizeSpec, knobs_from_dict, params_hash
from datasets.synthetic.plan import plan_lpr4m, plan_movingfashion, sample_spec
from datasets.synthetic.scale import plan_scale
from tests.synthetic_helpers import TINY


def test_plan_is_long_tailed_and_has_hard_negatives():
    prior = category_prior(1.0)
    assert len(prior) == 34 and prior[0] > 10 * prior[-1] and np.all(np.diff(prior) < 0)
    lives = plan_lpr4m(0, SIZES["default"], Knobs())
    train = [lv for lv in lives if lv.split == "train"]
    test = [lv for lv in lives if lv.split == "test"]
    assert len(train) == 70 and len(test) == 30
    n_clips = sum(len(lv.clips) for lv in train)
    n_queries = sum(len(lv.clips) for lv in test)
    n_products = sum(len(lv.products) for lv in lives)
    assert 2500 <= n_clips <= 3500 and 800 <= n_queries <= 1200 and n_products >= 1000
    counts = np.bincount([p.spec.category for lv in lives for p in lv.products], minlength=34)
    assert counts[:3].sum() > counts[-17:].sum()
    # a live sells several products of one category, many sharing a colour (hard negatives)
    shared = 0
    for lv in lives:
        by_cat = lv.by_category()
        assert max(len(v) for v in by_cat.values()) >= 3
        for idx in by_cat.values():
            colours = [lv.products[i].spec.colour for i in idx]
            shared += len(colours) - len(set(colours))
    assert shared > 0.25 * n_products
    train_sigs = {p.spec.signature() for lv in train for p in lv.products}
    assert not train_sigs & {p.spec.signature() for lv in test for p in lv.products}


def test_movingfashion_regular_videos_are_larger_longer_and_less_crowded_than_hard_ones():
    """The MovingFashion subsets: a regular video mostly shows the product alone, large and for
    most of the clip; a hard one leans small, short and among other products."""
    products = plan_movingfashion(0, SIZES["default"], Knobs())
    assert sum(p.split == "train" for p in products) == 1600 and sum(p.split == "test" for p in products) == 240

    def share(hard: bool, field: str, value: str) -> float:
        vids = [v for p in products if p.hard == hard for v in p.videos]
        return sum(getattr(v.attrs, field) == value for v in vids) / len(vids)

    for field, easy, difficult in (
        ("scale", "large", "small"),
        ("duration", "long", "short"),
        ("number", "single", "many"),
    ):
        assert share(False, field, easy) > share(True, field, easy) + 0.15, field
        assert share(True, field, difficult) > share(False, field, difficult) + 0.15, field


def test_products_per_live_knob_sets_the_gallery_group_size():
    lives = plan_lpr4m(0, TINY, Knobs(products_per_live=(9, 9)))
    assert all(len(lv.products) == 9 for lv in lives)
    assert sum(len(lv.clips) for lv in lives if lv.split == "train") == 9 * TINY.train_lives * TINY.clips_per_product[0]


def test_scale_plan_has_exact_counts():
    assert (
        SIZES["lpr4m-scale"].scale_queries,
        SIZES["lpr4m-scale"].scale_gallery,
        SIZES["lpr4m-scale"].scale_groups,
    ) == (20079, 66358, 110)
    small = SizeSpec(
        name="scale-test", pixels=False, scale_queries=301, scale_gallery=1234, scale_groups=7, scale_train_pairs=50
    )
    lives = plan_scale(0, small, Knobs(multi_gt_rate=0.2))
    test = [lv for lv in lives if lv.split == "test"]
    assert len(test) == 7
    assert sum(len(lv.clips) for lv in test) == 301 and all(lv.clips for lv in test)
    assert sum(len(p.image_ids) for lv in test for p in lv.products) == 1234
    assert sum(len(lv.clips) for lv in lives if lv.split == "train") == 50
    assert any(p.extra_image_id for lv in test for p in lv.products)


def test_sample_spec_respects_a_forced_colour():
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng, 3, Knobs(), "navy") for _ in range(50)]
    assert all(s.colour == "navy" and s.colour2 != "navy" for s in specs)
    assert len({(s.pattern, s.logo) for s in specs}) > 10


def test_knobs_validate_and_hash():
    with pytest.raises(ValueError, match="scale_probs"):
        Knobs(scale_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="occlusion_rate"):
        Knobs(occlusion_rate=1.5)
    with pytest.raises(ValueError, match="unknown knob"):
        knobs_from_dict({"occlusion": 0.1})
    k = knobs_from_dict({"scale_px": [[10, 20], [20, 30], [30, 40]]})
    assert k.scale_px == ((10, 20), (20, 30), (30, 40))
    easy = knobs_from_dict({"preset": "easy", "noise_std": 0.0})
    assert easy.noise_std == 0.0 and easy.scale_probs == PRESETS["easy"].scale_probs != Knobs().scale_probs
    with pytest.raises(ValueError, match="preset"):
        knobs_from_dict({"preset": "medium"})
    base = params_hash("lpr4m-release", TINY, Knobs(), 0)
    assert base == params_hash("lpr4m-release", TINY, Knobs(), 0)
    assert (
        len(
            {
                base,
                params_hash("lpr4m-release", TINY, Knobs(noise_std=1.0), 0),
                params_hash("lpr4m-release", TINY, Knobs(), 1),
                params_hash("lpr750k", TINY, Knobs(), 0),
                params_hash("lpr4m-release", dataclasses.replace(TINY, train_lives=5), Knobs(), 0),
            }
        )
        == 5
    )
