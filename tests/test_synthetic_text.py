"""The synthetic worlds' text language: Chinese and English worlds differ only in their text, and
the language is a checked knob."""

from __future__ import annotations

import dataclasses

import pytest

from datasets.synthetic.knobs import Knobs, knobs_from_dict, params_hash
from datasets.synthetic.plan import plan_lpr4m
from datasets.synthetic.text import FILLER
from tests.synthetic_helpers import TINY


def _cjk(text: str) -> int:
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_chinese_and_english_worlds_differ_only_in_their_text():
    """The same draws whatever the language: every planned field but the ASR and titles agrees
    (so frames, images, boxes and splits are the same files), and the image's printed title is
    the English one in both worlds."""
    zh = plan_lpr4m(0, TINY, Knobs())
    en = plan_lpr4m(0, TINY, Knobs(text_language="en"))

    def no_text(lives):
        return [
            (
                lv.live_id,
                lv.split,
                lv.stage_seed,
                [
                    (p.image_id, p.spec, p.title_on_image, p.shop_seed, p.extra_image_id, p.image_title)
                    for p in lv.products
                ],
                [dataclasses.replace(c, asr="") for c in lv.clips],
            )
            for lv in lives
        ]

    assert no_text(zh) == no_text(en)
    products = [(a, b) for lz, le in zip(zh, en) for a, b in zip(lz.products, le.products)]
    clips = [(a, b) for lz, le in zip(zh, en) for a, b in zip(lz.clips, le.clips)]
    assert all(b.image_title == b.title for _, b in products)  # English: printed = listed
    assert all(bool(a.title) == bool(b.title) for a, b in products)  # the same titled listings
    assert all(bool(a.asr) == bool(b.asr) for a, b in clips)  # the same empty transcripts
    spoken = [a.asr for a, _ in clips if a.asr]
    assert spoken and all(_cjk(s) >= 4 and " " not in s for s in spoken)
    assert all(_cjk(a.title) >= 2 for a, _ in products if a.title)
    assert not any(_cjk(b.asr) for _, b in clips)
    # the same phrases in other words: every transcript has its 2-5 filler phrases
    for a, b in clips[:50]:
        assert (
            2 <= sum(f in a.asr for f in FILLER["zh"]) <= 5 and 2 <= sum(f in b.asr for f in FILLER["en"])
            if a.asr
            else not b.asr
        )


def test_text_language_is_a_checked_knob():
    assert Knobs().text_language == "zh"
    assert knobs_from_dict({"text_language": "en"}).text_language == "en"
    with pytest.raises(ValueError, match="text_language must be 'zh' or 'en'"):
        Knobs(text_language="fr")
    assert params_hash("lpr4m-release", TINY, Knobs(), 0) != params_hash(
        "lpr4m-release", TINY, Knobs(text_language="en"), 0
    )
