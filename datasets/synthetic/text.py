"""ASR transcripts and shop titles: product attributes among livestream filler words.

A transcript names some of the intent product's attributes (colour, pattern, logo, category) in a
random order among filler phrases; with the knobs' rates it is empty, names a wrong colour or
pattern, or also talks about another product of the livestream. A title lists the attributes with
shop-listing filler. Both are deterministic functions of the generator passed in.
"""

from __future__ import annotations

import numpy as np

from datasets.synthetic.catalog import CATEGORIES, COLOUR_NAMES, PATTERNS
from datasets.synthetic.knobs import Knobs
from datasets.synthetic.products import ProductSpec

FILLER = (
    "okay everyone", "welcome back to the live room", "look at this one", "link number three", "limited stock today",
    "click the little cart", "only for our fans", "let me show you", "very good quality", "the price is really low",
    "don't miss it", "add it to your basket", "we ship tomorrow", "new arrival", "best seller this week",
    "it is so nice", "you can see the details", "hello to the new friends", "follow the shop", "three two one",
    "comment below", "very popular", "last few pieces", "super soft", "good for daily use",
)
TITLE_FILLER = ("new style", "2024", "hot sale", "official store", "premium", "classic", "free shipping", "gift", "slim fit", "large capacity")
PATTERN_WORDS = {"plain": "plain", "stripes": "striped", "dots": "polka dot", "checks": "checked"}


def _attrs(spec: ProductSpec, colour: str, pattern: str) -> list[str]:
    words = [colour, PATTERN_WORDS[pattern], CATEGORIES[spec.category].name]
    if spec.logo != "none":
        words.append(f"{spec.logo} logo")
    return words


def asr_text(rng: np.random.Generator, spec: ProductSpec, other: ProductSpec | None, knobs: Knobs) -> str:
    """The transcript of a clip presenting ``spec`` (``other``: another product of the live)."""
    if rng.random() < knobs.asr_missing_rate:
        return ""
    colour, pattern = spec.colour, spec.pattern
    if rng.random() < knobs.asr_error_rate:
        if rng.random() < 0.5:
            colour = str(rng.choice([c for c in COLOUR_NAMES if c != spec.colour]))
        else:
            pattern = str(rng.choice([p for p in PATTERNS if p != spec.pattern]))
    mentions = _attrs(spec, colour, pattern)
    keep = [m for m in mentions if rng.random() < 0.7] or [mentions[int(rng.integers(len(mentions)))]]
    phrases = [str(f) for f in rng.choice(FILLER, size=int(rng.integers(2, 6)), replace=False)]
    phrases += [f"this {m}" if i == 0 else m for i, m in enumerate(keep)]
    if other is not None and rng.random() < knobs.asr_distractor_rate:
        phrases.append(f"we also have the {other.colour} {CATEGORIES[other.category].name}")
    order = rng.permutation(len(phrases))
    return " ".join(phrases[i] for i in order)


def title_text(rng: np.random.Generator, spec: ProductSpec) -> str:
    """A shop listing title naming the product's attributes."""
    words = _attrs(spec, spec.colour, spec.pattern)
    extra = [str(f) for f in rng.choice(TITLE_FILLER, size=int(rng.integers(1, 3)), replace=False)]
    return " ".join(extra[:1] + words + extra[1:])
