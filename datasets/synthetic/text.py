"""ASR transcripts and shop titles: product attributes among livestream filler words.

A transcript names some of the intent product's attributes (colour, pattern, logo, category) in a
random order among filler phrases; with the knobs' rates it is empty, names a wrong colour or
pattern, or also talks about another product of the livestream. A title lists the attributes with
shop-listing filler. Both are deterministic functions of the generator passed in.

The draws are made on language-neutral phrases (:data:`Phrase`) and only then written out in a
language (``zh``: Chinese, as LPR4M's Kuaishou ASR and titles are; ``en``: English), through
tables of the same length in both languages: the generator is consumed identically whatever the
language, so every other file of a generated world (frames, images, boxes, splits) is
byte-identical between ``Knobs.text_language="zh"`` and ``"en"``.
"""

from __future__ import annotations

import numpy as np

from datasets.synthetic.catalog import CATEGORIES, COLOUR_NAMES, PATTERNS
from datasets.synthetic.knobs import Knobs
from datasets.synthetic.products import ProductSpec

LANGUAGES = ("zh", "en")
# a phrase: ("filler", i) | ("title", i) | ("colour", name) | ("pattern", name) | ("category", cid)
# | ("logo", name) | ("this", <attribute phrase>) | ("also", colour, cid)
Phrase = tuple

FILLER = {
    "en": (
        "okay everyone",
        "welcome back to the live room",
        "look at this one",
        "link number three",
        "limited stock today",
        "click the little cart",
        "only for our fans",
        "let me show you",
        "very good quality",
        "the price is really low",
        "don't miss it",
        "add it to your basket",
        "we ship tomorrow",
        "new arrival",
        "best seller this week",
        "it is so nice",
        "you can see the details",
        "hello to the new friends",
        "follow the shop",
        "three two one",
        "comment below",
        "very popular",
        "last few pieces",
        "super soft",
        "good for daily use",
    ),
    "zh": (
        "好的家人们",
        "欢迎回到直播间",
        "看一下这一款",
        "三号链接",
        "今天库存有限",
        "点一下小黄车",
        "只给我们的粉丝",
        "我给大家展示一下",
        "质量非常好",
        "价格真的很低",
        "千万不要错过",
        "赶紧加入购物车",
        "明天就发货",
        "新品上架",
        "本周爆款",
        "真的太好看了",
        "大家可以看一下细节",
        "欢迎新进来的宝宝",
        "关注一下店铺",
        "三二一上链接",
        "评论区扣一",
        "非常火",
        "最后几件了",
        "超级柔软",
        "日常百搭",
    ),
}
TITLE_FILLER = {
    "en": (
        "new style",
        "2024",
        "hot sale",
        "official store",
        "premium",
        "classic",
        "free shipping",
        "gift",
        "slim fit",
        "large capacity",
    ),
    "zh": ("新款", "2024", "热卖", "官方旗舰店", "高端", "经典款", "包邮", "送礼", "修身", "大容量"),
}
PATTERN_WORDS = {
    "en": {"plain": "plain", "stripes": "striped", "dots": "polka dot", "checks": "checked"},
    "zh": {"plain": "纯色", "stripes": "条纹", "dots": "波点", "checks": "格子"},
}
COLOUR_WORDS_ZH = {
    "red": "红色",
    "pink": "粉色",
    "orange": "橙色",
    "yellow": "黄色",
    "green": "绿色",
    "olive": "橄榄绿",
    "teal": "青色",
    "blue": "蓝色",
    "navy": "藏青色",
    "purple": "紫色",
    "brown": "棕色",
    "beige": "米色",
    "white": "白色",
    "grey": "灰色",
    "black": "黑色",
}
CATEGORY_WORDS_ZH = (
    "连衣裙",
    "T恤",
    "夹克",
    "长裤",
    "半身裙",
    "卫衣",
    "毛衣",
    "运动鞋",
    "手提包",
    "大衣",
    "短裤",
    "口红",
    "面霜",
    "靴子",
    "双肩包",
    "香水",
    "乳液",
    "帽子",
    "零食",
    "围巾",
    "墨镜",
    "手机",
    "手表",
    "袜子",
    "马克杯",
    "项链",
    "麦片",
    "耳机",
    "水壶",
    "平底锅",
    "小熊玩偶",
    "书",
    "皮球",
    "雨伞",
)
LOGO_WORDS_ZH = {
    "star": "星星",
    "circle": "圆形",
    "triangle": "三角",
    "cross": "十字",
    "diamond": "菱形",
    "ring": "圆环",
    "bar": "横条",
}
assert len(FILLER["zh"]) == len(FILLER["en"]) and len(TITLE_FILLER["zh"]) == len(TITLE_FILLER["en"])
assert len(CATEGORY_WORDS_ZH) == len(CATEGORIES) and set(COLOUR_WORDS_ZH) == set(COLOUR_NAMES)


def _attrs(spec: ProductSpec, colour: str, pattern: str) -> list[Phrase]:
    words: list[Phrase] = [("colour", colour), ("pattern", pattern), ("category", spec.category)]
    if spec.logo != "none":
        words.append(("logo", spec.logo))
    return words


def asr_phrases(rng: np.random.Generator, spec: ProductSpec, other: ProductSpec | None, knobs: Knobs) -> list[Phrase]:
    """The transcript's phrases, in spoken order ([] for a missing transcript)."""
    if rng.random() < knobs.asr_missing_rate:
        return []
    colour, pattern = spec.colour, spec.pattern
    if rng.random() < knobs.asr_error_rate:
        if rng.random() < 0.5:
            colour = str(rng.choice([c for c in COLOUR_NAMES if c != spec.colour]))
        else:
            pattern = str(rng.choice([p for p in PATTERNS if p != spec.pattern]))
    mentions = _attrs(spec, colour, pattern)
    keep = [m for m in mentions if rng.random() < 0.7] or [mentions[int(rng.integers(len(mentions)))]]
    n_filler = len(FILLER["en"])
    phrases: list[Phrase] = [
        ("filler", int(i)) for i in rng.choice(n_filler, size=int(rng.integers(2, 6)), replace=False)
    ]
    phrases += [("this", m) if i == 0 else m for i, m in enumerate(keep)]
    if other is not None and rng.random() < knobs.asr_distractor_rate:
        phrases.append(("also", other.colour, other.category))
    order = rng.permutation(len(phrases))
    return [phrases[i] for i in order]


def title_phrases(rng: np.random.Generator, spec: ProductSpec) -> list[Phrase]:
    """A shop listing title's phrases: one filler, the attributes, maybe a second filler."""
    words = _attrs(spec, spec.colour, spec.pattern)
    n_filler = len(TITLE_FILLER["en"])
    extra: list[Phrase] = [("title", int(i)) for i in rng.choice(n_filler, size=int(rng.integers(1, 3)), replace=False)]
    return extra[:1] + words + extra[1:]


def phrase_text(phrase: Phrase, lang: str) -> str:
    """One phrase written in ``lang``."""
    kind = phrase[0]
    zh = lang == "zh"
    if kind == "filler":
        return FILLER[lang][phrase[1]]
    if kind == "title":
        return TITLE_FILLER[lang][phrase[1]]
    if kind == "colour":
        return COLOUR_WORDS_ZH[phrase[1]] if zh else phrase[1]
    if kind == "pattern":
        return PATTERN_WORDS[lang][phrase[1]]
    if kind == "category":
        return CATEGORY_WORDS_ZH[phrase[1]] if zh else CATEGORIES[phrase[1]].name
    if kind == "logo":
        return f"{LOGO_WORDS_ZH[phrase[1]]}logo" if zh else f"{phrase[1]} logo"
    if kind == "this":
        return ("这款" if zh else "this ") + phrase_text(phrase[1], lang)
    if kind == "also":
        colour, category = phrase_text(("colour", phrase[1]), lang), phrase_text(("category", phrase[2]), lang)
        return f"我们还有{colour}的{category}" if zh else f"we also have the {colour} {category}"
    raise ValueError(f"unknown text phrase {phrase!r}")


def write_asr(phrases: list[Phrase], lang: str) -> str:
    """A transcript: spoken phrases, comma-separated in Chinese, space-separated in English."""
    _check(lang)
    return ("，" if lang == "zh" else " ").join(phrase_text(p, lang) for p in phrases)


def write_title(phrases: list[Phrase], lang: str) -> str:
    """A title: Chinese listing titles run their words together; English ones space them."""
    _check(lang)
    return ("" if lang == "zh" else " ").join(phrase_text(p, lang) for p in phrases)


def _check(lang: str) -> None:
    if lang not in LANGUAGES:
        raise ValueError(f"synthetic text language {lang!r} is not one of {', '.join(LANGUAGES)}")


def asr_text(rng: np.random.Generator, spec: ProductSpec, other: ProductSpec | None, knobs: Knobs) -> str:
    """The transcript of a clip presenting ``spec`` (``other``: another product of the live)."""
    return write_asr(asr_phrases(rng, spec, other, knobs), knobs.text_language)


def title_text(rng: np.random.Generator, spec: ProductSpec, lang: str = "zh") -> str:
    """A shop listing title naming the product's attributes, in ``lang``."""
    return write_title(title_phrases(rng, spec), lang)
