"""The world plan: livestreams, their products and clips (ids, attributes, text), no pixels yet.

Planning is cheap and sequential (one generator seeded from the user seed); rendering happens
later per livestream with seeds stored in the plan, so the files do not depend on how the
rendering work is split across processes.

LPR4M: every livestream sells a set of products from a few categories (its gallery group), many
sharing a colour within a category. Training livestreams yield training clips (several per
product); test livestreams are disjoint (new live ids, hosts, rooms) with unseen product instances
of categories seen in training, and yield the queries. MovingFashion: products of fashion
categories, each with one (sometimes two) video(s) of its own, colours drawn independently (one
global gallery, no shop's range: ``shared_colour_rate`` is an LPR4M knob); ``hard`` videos get
smaller scales, more distractors and shorter visibility than ``regular`` ones, which mostly show
the product alone (as the real subsets: street videos vs. an influencer wearing it). Garments
are mostly worn: drawn on the host's body at 1.3-2 torso widths (``scene.WORN_FRACTION``),
as the person in a MovingFashion video wears the product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from datasets.synthetic.catalog import CATEGORIES, COLOUR_NAMES, COLOURS, LOGOS, PATTERNS, category_prior
from datasets.synthetic.knobs import Knobs, SizeSpec
from datasets.synthetic.products import ProductSpec
from datasets.synthetic.scene import DURATIONS, NUMBERS, SCALES, ClipAttrs
from datasets.synthetic.text import asr_text, title_phrases, write_title

LOGO_RGBS = ((250, 250, 250), (20, 20, 20), (212, 175, 55), (200, 30, 40), (40, 90, 200))
TRIM_RGBS = ((35, 35, 38), (70, 70, 74), (235, 235, 230), (150, 110, 70))


def uuid_from(rng: np.random.Generator) -> str:
    """A UUID-shaped id (five dash-separated hex fields) from the generator."""
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def sub_seed(*parts: int) -> int:
    """A 63-bit seed derived from integer parts (stable across platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class Product:
    image_id: str
    spec: ProductSpec
    title: str  # the title text in ``Knobs.text_language`` ("" when the listing has none)
    title_on_image: bool
    shop_seed: int
    extra_image_id: Optional[str] = None  # a second shop image (test products only)
    # the title as printed on the shop image: always English (the bitmap font has no CJK glyphs,
    # and the pixels stay the same whatever the text language)
    image_title: str = ""

    @property
    def image_ids(self) -> tuple[str, ...]:
        return (self.image_id,) + ((self.extra_image_id,) if self.extra_image_id else ())


@dataclass
class Clip:
    clip_id: str
    intent: int  # index into the livestream's products
    distractors: tuple[int, ...]
    attrs: ClipAttrs
    n_frames: int
    asr: str
    quality: int
    seed: int


@dataclass
class Live:
    live_id: str
    split: str  # "train" | "test"
    index: int
    stage_seed: int
    products: list[Product] = field(default_factory=list)
    clips: list[Clip] = field(default_factory=list)
    clean_stage: bool = False
    _by_cat: Optional[dict[int, list[int]]] = field(default=None, repr=False)

    def by_category(self) -> dict[int, list[int]]:
        """category -> indices of the live's products (computed once the products are set)."""
        if self._by_cat is None or sum(map(len, self._by_cat.values())) != len(self.products):
            self._by_cat = {}
            for i, p in enumerate(self.products):
                self._by_cat.setdefault(p.spec.category, []).append(i)
        return self._by_cat


def _pick(rng: np.random.Generator, names: tuple[str, ...], probs) -> str:
    """``names[i]`` with probability ``probs[i]`` (one uniform draw)."""
    u, acc = rng.random() * float(sum(probs)), 0.0
    for name, p in zip(names, probs):
        acc += float(p)
        if u < acc:
            return name
    return names[-1]


def sample_spec(rng: np.random.Generator, category: int, knobs: Knobs, colour: Optional[str] = None) -> ProductSpec:
    """A random instance of ``category`` (``colour`` forced when given); one draw of uniforms."""
    u = rng.random(17).tolist()
    n_col = len(COLOUR_NAMES)
    pick = lambda x, n: min(int(x * n), n - 1)  # noqa: E731
    colour = colour or COLOUR_NAMES[pick(u[0], n_col)]
    c2 = pick(u[1], n_col - 1)
    colour2 = COLOUR_NAMES[c2 + (c2 >= COLOUR_NAMES.index(colour))]  # any colour but the base one
    a = knobs.colour_jitter

    def jit(name: str, us: list[float]) -> tuple[int, int, int]:
        return tuple(min(255, max(0, c + pick(x, 2 * a + 1) - a)) for c, x in zip(COLOURS[name], us))  # type: ignore[return-value]

    return ProductSpec(
        category=category,
        colour=colour,
        rgb=jit(colour, u[2:5]),
        colour2=colour2,
        rgb2=jit(colour2, u[5:8]),
        pattern=PATTERNS[pick(u[8], len(PATTERNS))],
        period=round(7 + 7 * u[9], 2),
        angle=(0, 45, 90, 135)[pick(u[10], 4)],
        logo=LOGOS[pick(u[11], len(LOGOS))],
        logo_rgb=LOGO_RGBS[pick(u[12], len(LOGO_RGBS))],
        trim_rgb=TRIM_RGBS[pick(u[13], len(TRIM_RGBS))],
        w=round(0.85 + 0.25 * u[14], 3),
        h=round(0.88 + 0.2 * u[15], 3),
        v=round(u[16], 3),
    )


def _new_product(
    rng: np.random.Generator, category: int, knobs: Knobs, same_cat: list[ProductSpec], taken: set[tuple]
) -> Product:
    for _ in range(10):
        colour = None
        if same_cat and rng.random() < knobs.shared_colour_rate:
            colour = same_cat[int(rng.integers(len(same_cat)))].colour
        spec = sample_spec(rng, category, knobs, colour)
        if spec.signature() not in taken:
            break
    taken.add(spec.signature())
    phrases = title_phrases(rng, spec) if rng.random() < knobs.title_rate else []
    title = write_title(phrases, knobs.text_language)
    return Product(
        image_id=uuid_from(rng),
        spec=spec,
        title=title,
        title_on_image=bool(title) and rng.random() < knobs.title_on_image_rate,
        shop_seed=int(rng.integers(2**62)),
        image_title=write_title(phrases, "en"),
    )


def _clip_attrs(rng: np.random.Generator, knobs: Knobs, worn: bool = False, hard: Optional[bool] = None) -> ClipAttrs:
    sp, dp, npr = knobs.scale_probs, knobs.duration_probs, knobs.number_probs
    if hard is not None:  # MovingFashion: hard videos lean small / short / many, regular ones the other way
        shift = np.array([1.6, 1.0, 0.5]) if hard else np.array([0.4, 1.0, 1.8])
        # (small, medium, large) and (short, medium, long) put the easy case last, (single, few,
        # many) first: the number shift is the reverse
        sp, dp, npr = (
            (np.asarray(p) * s) / (np.asarray(p) * s).sum() for p, s in ((sp, shift), (dp, shift), (npr, shift[::-1]))
        )
    return ClipAttrs(_pick(rng, SCALES, sp), _pick(rng, DURATIONS, dp), _pick(rng, NUMBERS, npr), worn=worn)


def _distractors(rng: np.random.Generator, live: Live, intent: int, number: str, knobs: Knobs) -> tuple[int, ...]:
    """Other products of the live shown in the clip, mostly of the intent product's category."""
    lo, hi = knobs.distractors[NUMBERS.index(number)]
    want = int(rng.integers(lo, hi + 1))
    cat = live.products[intent].spec.category
    by_cat = live.by_category()
    same = [i for i in by_cat[cat] if i != intent]
    n_other = len(live.products) - len(by_cat[cat])
    out: list[int] = []
    for _ in range(want):
        if same and (rng.random() < knobs.same_category_distractor_rate or n_other == 0):
            out.append(same.pop(int(rng.integers(len(same)))))
        elif n_other > 0:
            for _ in range(100):  # rejection: a product of another category not yet shown
                j = int(rng.integers(len(live.products)))
                if live.products[j].spec.category != cat and j not in out:
                    out.append(j)
                    n_other -= 1
                    break
        else:
            break
    return tuple(out)


def _live_products(
    rng: np.random.Generator, n: int, knobs: Knobs, prior: np.ndarray, taken: set[tuple]
) -> list[Product]:
    k = int(rng.integers(knobs.categories_per_live[0], knobs.categories_per_live[1] + 1))
    k = min(k, int((prior > 0).sum()))
    cats = rng.choice(len(prior), size=k, replace=False, p=prior)
    weights = np.array([2.0**-i for i in range(k)])  # the first category dominates the live
    cum = np.cumsum(weights / weights.sum())
    products: list[Product] = []
    same: dict[int, list[ProductSpec]] = {int(c): [] for c in cats}
    for _ in range(n):
        c = int(cats[min(int(np.searchsorted(cum, rng.random(), side="right")), k - 1)])
        products.append(_new_product(rng, c, knobs, same[c], taken))
        same[c].append(products[-1].spec)
    return products


def _make_clip(
    rng: np.random.Generator, live: Live, intent: int, t_ms: int, size: SizeSpec, knobs: Knobs
) -> tuple[Clip, int]:
    attrs = _clip_attrs(rng, knobs)
    n_frames = int(rng.integers(size.frames_per_clip[0], size.frames_per_clip[1] + 1))
    start = t_ms + int(rng.integers(1_000, 60_000))
    end = start + n_frames * int(rng.integers(300, 1_500))
    distractors = _distractors(rng, live, intent, attrs.number, knobs)
    n = len(live.products)
    j = int(rng.integers(n - 1)) if n > 1 else -1
    other = live.products[j + (j >= intent)].spec if n > 1 else None  # another product of the live
    clip = Clip(
        clip_id=f"{live.live_id}-{start}-{end}",
        intent=intent,
        distractors=distractors,
        attrs=attrs,
        n_frames=n_frames,
        asr=asr_text(rng, live.products[intent].spec, other, knobs),
        quality=int(rng.integers(knobs.jpeg_quality[0], knobs.jpeg_quality[1] + 1)),
        seed=int(rng.integers(2**62)),
    )
    return clip, end


def plan_lpr4m(seed: int, size: SizeSpec, knobs: Knobs) -> list[Live]:
    """Training livestreams first, then test livestreams (disjoint ids, stages and products)."""
    rng = np.random.default_rng(sub_seed(seed, 4))
    prior = category_prior(knobs.category_alpha)
    taken: set[tuple] = set()
    lives: list[Live] = []
    for split, count in (("train", size.train_lives), ("test", size.test_lives)):
        if split == "test":  # test categories: those seen in training
            seen = {p.spec.category for lv in lives for p in lv.products}
            mask = np.array([c in seen for c in range(len(CATEGORIES))], float) if seen else np.ones(len(CATEGORIES))
            prior = prior * mask / (prior * mask).sum()
        for i in range(count):
            live = Live(live_id=uuid_from(rng), split=split, index=len(lives), stage_seed=int(rng.integers(2**62)))
            lo, hi = knobs.products_per_live or (
                size.products_per_live if split == "train" else size.test_products_per_live
            )
            n = int(rng.integers(lo, hi + 1))
            live.products = _live_products(rng, n, knobs, prior, taken)
            t_ms = 0
            if split == "train":
                for pi in range(len(live.products)):
                    for _ in range(int(rng.integers(size.clips_per_product[0], size.clips_per_product[1] + 1))):
                        clip, t_ms = _make_clip(rng, live, pi, t_ms, size, knobs)
                        live.clips.append(clip)
                order = rng.permutation(len(live.clips))  # clips of a live are not grouped by product
                live.clips = [live.clips[j] for j in order]
            else:
                for p in live.products:
                    if rng.random() < knobs.multi_gt_rate:
                        p.extra_image_id = uuid_from(rng)
                nq = int(rng.integers(size.queries_per_live[0], size.queries_per_live[1] + 1))
                for _ in range(nq):
                    clip, t_ms = _make_clip(rng, live, int(rng.integers(len(live.products))), t_ms, size, knobs)
                    live.clips.append(clip)
            lives.append(live)
    return lives


@dataclass
class MFVideo:
    name: str  # file stem
    attrs: ClipAttrs
    n_frames: int
    stage_seed: int
    seed: int
    distractors: tuple[ProductSpec, ...]
    missing: bool = False
    tracklets: bool = True


@dataclass
class MFProduct:
    pid: str
    split: str
    spec: ProductSpec
    hard: bool
    shop_seed: int
    videos: list[MFVideo] = field(default_factory=list)


def plan_movingfashion(seed: int, size: SizeSpec, knobs: Knobs) -> list[MFProduct]:
    """Train products then test products; ``size.mf_missing_*`` videos are marked missing."""
    rng = np.random.default_rng(sub_seed(seed, 7))
    prior = category_prior(knobs.category_alpha, fashion_only=True)
    taken: set[tuple] = set()
    products: list[MFProduct] = []
    pool: list[ProductSpec] = []  # recent products, the source of same-category distractors
    next_id = 0
    for split, count in (("train", size.mf_train_products), ("test", size.mf_test_products)):
        for _ in range(count):
            cat = int(rng.choice(len(prior), p=prior))
            for _ in range(50):  # colours drawn independently: no shop's range, one global gallery
                spec = sample_spec(rng, cat, knobs)
                if spec.signature() not in taken:
                    break
            taken.add(spec.signature())
            pool.append(spec)
            hard = bool(rng.random() < size.mf_hard_rate)
            prod = MFProduct(pid=str(next_id), split=split, spec=spec, hard=hard, shop_seed=int(rng.integers(2**62)))
            next_id += 1
            n_videos = 2 if (split == "train" and rng.random() < size.mf_second_video_rate) else 1
            for v in range(n_videos):
                worn = cat in _WORN
                attrs = _clip_attrs(rng, knobs, worn=worn and rng.random() < 0.7, hard=hard)
                lo, hi = knobs.distractors[NUMBERS.index(attrs.number)]
                n_d = int(rng.integers(lo, hi + 1))
                cands = (
                    [s for s in pool[-200:-1] if s.category == cat]
                    if rng.random() < knobs.same_category_distractor_rate
                    else pool[-200:-1]
                )
                picks = [cands[int(j)] for j in rng.permutation(len(cands))[:n_d]] if cands else []
                seconds = int(rng.integers(size.mf_seconds[0], size.mf_seconds[1] + 1))
                prod.videos.append(
                    MFVideo(
                        name=f"{uuid_from(rng).replace('-', '')[:16]}",
                        attrs=attrs,
                        n_frames=seconds * size.mf_fps,
                        stage_seed=int(rng.integers(2**62)),
                        seed=int(rng.integers(2**62)),
                        distractors=tuple(picks),
                        tracklets=bool(rng.random() < size.mf_tracklet_rate),
                    )
                )
            products.append(prod)
    for split, k in (("train", size.mf_missing_train), ("test", size.mf_missing_test)):
        videos = [v for p in products if p.split == split for v in p.videos]
        for j in sorted(rng.choice(len(videos), size=min(k, len(videos)), replace=False).tolist()):
            videos[j].missing = True
    return products


_WORN = {
    c.cid
    for c in CATEGORIES
    if c.name in ("dress", "t-shirt", "jacket", "sweater", "hoodie", "coat", "skirt", "trousers", "shorts")
}
