"""The product catalogue: 34 categories, each a procedural shape family, with a long-tailed prior.

A category is drawn as a list of primitive operations in unit coordinates (``[0, 1]^2`` of the
sprite canvas), split into a *body* (filled with the instance's colour and pattern) and a *trim*
(soles, caps, handles, straps: a secondary colour). Three per-instance shape parameters vary the
silhouette within the family: ``w`` (width factor), ``h`` (height factor) and ``v`` (a variant in
[0, 1]: sleeve length, neckline, handle size...). The ``logo`` anchor says where a logo sits.

The category order is the long-tail order: the prior weight of rank ``k`` is ``(k + 1) ** -alpha``
(clothing first, as in LPR4M where apparel dominates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Op = tuple  # ("poly", pts) | ("ellipse", box) | ("rect", box) | ("rrect", box, r) | ("line", pts, w) | ("arc", box, a0, a1, w) | ("pie", box, a0, a1)


@dataclass(frozen=True)
class Shape:
    body: tuple[Op, ...]
    trim: tuple[Op, ...]
    logo: tuple[float, float, float]  # centre x, centre y, radius (unit coordinates)


def _c(x: float, y: float, w: float, h: float) -> tuple[float, float]:
    """Scale a point around the canvas centre by the instance's width / height factors."""
    return (0.5 + (x - 0.5) * w, 0.5 + (y - 0.5) * h)


def _pts(points: list[tuple[float, float]], w: float, h: float) -> list[tuple[float, float]]:
    return [_c(x, y, w, h) for x, y in points]


def _box(x0: float, y0: float, x1: float, y1: float, w: float, h: float) -> tuple[float, float, float, float]:
    a, b = _c(x0, y0, w, h)
    c, d = _c(x1, y1, w, h)
    return (a, b, c, d)


# ----------------------------------------------------------------------------- shape families
# the shapes are coordinate tables, one line a part: the formatter leaves them as drawn
# fmt: off
def dress(w, h, v):
    waist = 0.38 + 0.04 * v
    hem = 0.12 + 0.08 * v
    body = [("poly", _pts([(0.36, 0.08), (0.44, 0.12), (0.56, 0.12), (0.64, 0.08), (0.66, waist), (0.5 + 0.38 + hem * 0.2, 0.94), (0.5 - 0.38 - hem * 0.2, 0.94), (0.34, waist)], w, h))]
    trim = [("rect", _box(0.34, waist - 0.03, 0.66, waist + 0.02, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.62, w, h), 0.1))


def tshirt(w, h, v):
    sl = 0.14 + 0.1 * v
    body = [("poly", _pts([(0.38, 0.14), (0.62, 0.14), (0.86, 0.24), (0.86, 0.24 + sl), (0.72, 0.24 + sl), (0.72, 0.88), (0.28, 0.88), (0.28, 0.24 + sl), (0.14, 0.24 + sl), (0.14, 0.24)], w, h))]
    trim = [("ellipse", _box(0.42, 0.1, 0.58, 0.2, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.42, w, h), 0.1))


def jacket(w, h, v):
    body = [("poly", _pts([(0.36, 0.1), (0.64, 0.1), (0.9, 0.24), (0.92, 0.8), (0.78, 0.8), (0.74, 0.4), (0.74, 0.92), (0.26, 0.92), (0.26, 0.4), (0.22, 0.8), (0.08, 0.8), (0.1, 0.24)], w, h))]
    trim = [("line", _pts([(0.5, 0.16), (0.5, 0.92)], w, h), 0.03), ("poly", _pts([(0.4, 0.1), (0.5, 0.3 + 0.1 * v), (0.6, 0.1)], w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.38, 0.4, w, h), 0.07))


def trousers(w, h, v):
    flare = 0.04 * v
    body = [("poly", _pts([(0.3, 0.06), (0.7, 0.06), (0.74 + flare, 0.94), (0.54, 0.94), (0.5, 0.34), (0.46, 0.94), (0.26 - flare, 0.94)], w, h))]
    trim = [("rect", _box(0.3, 0.06, 0.7, 0.12, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.38, 0.24, w, h), 0.06))


def skirt(w, h, v):
    hem = 0.78 + 0.14 * v
    body = [("poly", _pts([(0.34, 0.2), (0.66, 0.2), (0.84, hem), (0.16, hem)], w, h))]
    trim = [("rect", _box(0.33, 0.15, 0.67, 0.22, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.5, w, h), 0.1))


def shorts(w, h, v):
    leg = 0.6 + 0.15 * v
    body = [("poly", _pts([(0.22, 0.26), (0.78, 0.26), (0.84, leg), (0.54, leg), (0.5, 0.46), (0.46, leg), (0.16, leg)], w, h))]
    trim = [("rect", _box(0.22, 0.22, 0.78, 0.3, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.33, 0.42, w, h), 0.07))


def hoodie(w, h, v):
    body = [("poly", _pts([(0.34, 0.22), (0.66, 0.22), (0.9, 0.34), (0.92, 0.86), (0.78, 0.86), (0.74, 0.46), (0.74, 0.92), (0.26, 0.92), (0.26, 0.46), (0.22, 0.86), (0.08, 0.86), (0.1, 0.34)], w, h)),
            ("ellipse", _box(0.34, 0.06, 0.66, 0.34, w, h))]
    trim = [("rect", _box(0.36, 0.62, 0.64, 0.76 + 0.04 * v, w, h)), ("ellipse", _box(0.41, 0.12, 0.59, 0.28, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.48, w, h), 0.09))


def sweater(w, h, v):
    body = [("poly", _pts([(0.36, 0.12), (0.64, 0.12), (0.9, 0.24), (0.94, 0.84), (0.8, 0.84), (0.74, 0.36), (0.74, 0.86), (0.26, 0.86), (0.26, 0.36), (0.2, 0.84), (0.06, 0.84), (0.1, 0.24)], w, h))]
    trim = [("rect", _box(0.26, 0.82, 0.74, 0.9, w, h)), ("pie", _box(0.38, 0.02 + 0.06 * v, 0.62, 0.22, w, h), 0, 180)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.46, w, h), 0.11))


def coat(w, h, v):
    body = [("poly", _pts([(0.36, 0.04), (0.64, 0.04), (0.86, 0.16), (0.9, 0.7), (0.78, 0.7), (0.76, 0.3), (0.8, 0.97), (0.2, 0.97), (0.24, 0.3), (0.22, 0.7), (0.1, 0.7), (0.14, 0.16)], w, h))]
    trim = [("line", _pts([(0.5, 0.1), (0.5, 0.97)], w, h), 0.025)] + [("ellipse", _box(0.53, y, 0.58, y + 0.05, w, h)) for y in (0.3, 0.45, 0.6 + 0.05 * v)]
    return Shape(tuple(body), tuple(trim), (*_c(0.36, 0.36, w, h), 0.06))


def sneaker(w, h, v):
    body = [("poly", _pts([(0.08, 0.5), (0.3, 0.42 - 0.08 * v), (0.42, 0.4), (0.58, 0.52), (0.86, 0.56), (0.94, 0.64), (0.94, 0.68), (0.08, 0.68)], w, h))]
    trim = [("rect", _box(0.06, 0.66, 0.96, 0.76, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.38, 0.56, w, h), 0.08))


def boot(w, h, v):
    top = 0.08 + 0.16 * v
    body = [("poly", _pts([(0.24, top), (0.56, top), (0.58, 0.56), (0.86, 0.64), (0.9, 0.8), (0.22, 0.8)], w, h))]
    trim = [("rect", _box(0.2, 0.8, 0.92, 0.9, w, h)), ("rect", _box(0.22, 0.8, 0.34, 0.94, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.4, 0.45, w, h), 0.08))


def handbag(w, h, v):
    body = [("poly", _pts([(0.2, 0.38), (0.8, 0.38), (0.9, 0.88), (0.1, 0.88)], w, h))]
    trim = [("arc", _box(0.3, 0.12 - 0.08 * v, 0.7, 0.6, w, h), 180, 360, 0.05), ("rect", _box(0.44, 0.44, 0.56, 0.52, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.66, w, h), 0.1))


def backpack(w, h, v):
    body = [("rrect", _box(0.22, 0.16, 0.78, 0.92, w, h), 0.12)]
    trim = [("rrect", _box(0.3, 0.52 + 0.06 * v, 0.7, 0.86, w, h), 0.05), ("arc", _box(0.38, 0.04, 0.62, 0.28, w, h), 180, 360, 0.04)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.36, w, h), 0.1))


def hat(w, h, v):
    body = [("pie", _box(0.24, 0.22 - 0.1 * v, 0.76, 0.86 + 0.1 * v, w, h), 180, 360)]
    trim = [("ellipse", _box(0.06, 0.5, 0.94, 0.66, w, h)), ("rect", _box(0.24, 0.46, 0.76, 0.54, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.38, w, h), 0.09))


def scarf(w, h, v):
    body = [("poly", _pts([(0.14, 0.1), (0.34, 0.1), (0.86, 0.76), (0.86, 0.92), (0.68, 0.92), (0.14, 0.3)], w, h))]
    trim = [("line", _pts([(0.68, 0.92 + 0.04 * v), (0.86, 0.92 + 0.04 * v)], w, h), 0.04)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.5, w, h), 0.08))


def sock(w, h, v):
    body = [("poly", _pts([(0.34, 0.06), (0.56, 0.06), (0.56, 0.6), (0.82, 0.72), (0.8, 0.92), (0.36, 0.9), (0.34, 0.6)], w, h))]
    trim = [("rect", _box(0.34, 0.06, 0.56, 0.16 + 0.06 * v, w, h)), ("ellipse", _box(0.68, 0.72, 0.84, 0.92, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.45, 0.36, w, h), 0.07))


def sunglasses(w, h, v):
    lens = 0.18 + 0.05 * v
    body = [("ellipse", _box(0.08, 0.5 - lens, 0.46, 0.5 + lens, w, h)), ("ellipse", _box(0.54, 0.5 - lens, 0.92, 0.5 + lens, w, h))]
    trim = [("line", _pts([(0.44, 0.44), (0.56, 0.44)], w, h), 0.04), ("line", _pts([(0.08, 0.42), (0.02, 0.38)], w, h), 0.03), ("line", _pts([(0.92, 0.42), (0.98, 0.38)], w, h), 0.03)]
    return Shape(tuple(body), tuple(trim), (*_c(0.27, 0.5, w, h), 0.06))


def watch(w, h, v):
    r = 0.2 + 0.06 * v
    body = [("ellipse", _box(0.5 - r, 0.5 - r, 0.5 + r, 0.5 + r, w, h))]
    trim = [("rect", _box(0.4, 0.04, 0.6, 0.5 - r + 0.02, w, h)), ("rect", _box(0.4, 0.5 + r - 0.02, 0.6, 0.96, w, h)), ("line", _pts([(0.5, 0.5), (0.5, 0.5 - r * 0.7)], w, h), 0.025)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.6, w, h), 0.06))


def necklace(w, h, v):
    body = [("poly", _pts([(0.5, 0.58), (0.62, 0.74 + 0.08 * v), (0.5, 0.92), (0.38, 0.74 + 0.08 * v)], w, h))]
    trim = [("arc", _box(0.14, 0.0, 0.86, 0.7, w, h), 20, 160, 0.03)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.76, w, h), 0.06))


def lipstick(w, h, v):
    body = [("rect", _box(0.36, 0.46, 0.64, 0.94, w, h))]
    trim = [("poly", _pts([(0.4, 0.46), (0.6, 0.46), (0.6, 0.2 + 0.08 * v), (0.4, 0.12)], w, h)), ("rect", _box(0.34, 0.42, 0.66, 0.5, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.7, w, h), 0.08))


def perfume(w, h, v):
    body = [("rrect", _box(0.24, 0.34, 0.76, 0.92, w, h), 0.08 + 0.06 * v)]
    trim = [("rect", _box(0.4, 0.12, 0.6, 0.34, w, h)), ("rect", _box(0.44, 0.28, 0.56, 0.36, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.62, w, h), 0.11))


def cream_jar(w, h, v):
    body = [("rrect", _box(0.14, 0.42, 0.86, 0.84, w, h), 0.06)]
    trim = [("rrect", _box(0.12, 0.26 + 0.06 * v, 0.88, 0.44, w, h), 0.04)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.63, w, h), 0.12))


def lotion(w, h, v):
    body = [("rrect", _box(0.3, 0.3, 0.7, 0.94, w, h), 0.14)]
    trim = [("rect", _box(0.44, 0.14, 0.56, 0.3, w, h)), ("rect", _box(0.44, 0.1, 0.7 + 0.08 * v, 0.16, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.6, w, h), 0.11))


def phone(w, h, v):
    body = [("rrect", _box(0.28, 0.06, 0.72, 0.94, w, h), 0.06 + 0.04 * v)]
    trim = [("rect", _box(0.32, 0.14, 0.68, 0.8, w, h)), ("ellipse", _box(0.46, 0.84, 0.54, 0.9, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.47, w, h), 0.08))


def headphones(w, h, v):
    body = [("rrect", _box(0.1, 0.5, 0.3, 0.84, w, h), 0.06), ("rrect", _box(0.7, 0.5, 0.9, 0.84, w, h), 0.06)]
    trim = [("arc", _box(0.16, 0.12 - 0.06 * v, 0.84, 0.9, w, h), 180, 360, 0.05)]
    return Shape(tuple(body), tuple(trim), (*_c(0.2, 0.67, w, h), 0.07))


def mug(w, h, v):
    body = [("rect", _box(0.18, 0.24, 0.68, 0.86, w, h))]
    trim = [("arc", _box(0.56, 0.36, 0.86 + 0.04 * v, 0.72, w, h), 270, 90, 0.05), ("ellipse", _box(0.18, 0.2, 0.68, 0.28, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.43, 0.55, w, h), 0.11))


def kettle(w, h, v):
    body = [("pie", _box(0.2, 0.3, 0.8, 1.3, w, h), 180, 360), ("rect", _box(0.2, 0.79, 0.8, 0.86, w, h))]
    trim = [("poly", _pts([(0.22, 0.66), (0.06, 0.48 - 0.06 * v), (0.1, 0.46), (0.26, 0.58)], w, h)), ("arc", _box(0.34, 0.12, 0.66, 0.46, w, h), 180, 360, 0.04)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.66, w, h), 0.09))


def pan(w, h, v):
    body = [("ellipse", _box(0.04, 0.26, 0.6, 0.82, w, h))]
    trim = [("line", _pts([(0.58, 0.54), (0.96, 0.5 - 0.1 * v)], w, h), 0.06), ("ellipse", _box(0.1, 0.32, 0.54, 0.76, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.32, 0.54, w, h), 0.1))


def snack_bag(w, h, v):
    top = [(0.2 + 0.06 * i, 0.12 + (0.03 if i % 2 else 0.0)) for i in range(11)]
    body = [("poly", _pts(top + [(0.84, 0.86), (0.16, 0.86)], w, h))]
    trim = [("rect", _box(0.16, 0.8 - 0.04 * v, 0.84, 0.88, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.46, w, h), 0.14))


def cereal_box(w, h, v):
    body = [("rect", _box(0.22, 0.1, 0.78, 0.94, w, h))]
    trim = [("poly", _pts([(0.22, 0.1), (0.78, 0.1), (0.86, 0.04), (0.3, 0.04)], w, h)), ("rect", _box(0.22, 0.1, 0.78, 0.2 + 0.06 * v, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.56, w, h), 0.14))


def toy_bear(w, h, v):
    body = [("ellipse", _box(0.26, 0.42, 0.74, 0.94, w, h)), ("ellipse", _box(0.3, 0.1, 0.7, 0.5, w, h)),
            ("ellipse", _box(0.26, 0.06, 0.4, 0.2, w, h)), ("ellipse", _box(0.6, 0.06, 0.74, 0.2, w, h))]
    trim = [("ellipse", _box(0.42, 0.3, 0.58, 0.44 + 0.03 * v, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.7, w, h), 0.1))


def ball(w, h, v):
    body = [("ellipse", _box(0.12, 0.12, 0.88, 0.88, 1.0, 1.0))]
    trim = [("arc", _box(0.12, 0.3 - 0.1 * v, 0.88, 0.7 + 0.1 * v, 1.0, 1.0), 0, 180, 0.03), ("line", [(0.5, 0.12), (0.5, 0.88)], 0.03)]
    return Shape(tuple(body), tuple(trim), (0.34, 0.34, 0.09))


def book(w, h, v):
    body = [("rect", _box(0.24, 0.08, 0.78, 0.92, w, h))]
    trim = [("rect", _box(0.2, 0.08, 0.3, 0.92, w, h)), ("rect", _box(0.36, 0.2, 0.7, 0.28 + 0.04 * v, w, h))]
    return Shape(tuple(body), tuple(trim), (*_c(0.53, 0.58, w, h), 0.12))


def umbrella(w, h, v):
    body = [("pie", _box(0.06, 0.1, 0.94, 0.9 + 0.1 * v, w, h), 180, 360)]
    trim = [("line", _pts([(0.5, 0.5), (0.5, 0.9)], w, h), 0.03), ("arc", _box(0.38, 0.82, 0.5, 0.96, w, h), 0, 180, 0.03)]
    return Shape(tuple(body), tuple(trim), (*_c(0.5, 0.32, w, h), 0.09))


@dataclass(frozen=True)
# fmt: on
class Category:
    cid: int
    name: str
    draw: Callable[[float, float, float], Shape]
    fashion: bool  # used by the MovingFashion generator


_FAMILY: list[tuple[str, Callable, bool]] = [
    ("dress", dress, True), ("t-shirt", tshirt, True), ("jacket", jacket, True), ("trousers", trousers, True),
    ("skirt", skirt, True), ("hoodie", hoodie, True), ("sweater", sweater, True), ("sneakers", sneaker, True),
    ("handbag", handbag, True), ("coat", coat, True), ("shorts", shorts, True), ("lipstick", lipstick, False),
    ("cream jar", cream_jar, False), ("boots", boot, True), ("backpack", backpack, True), ("perfume", perfume, False),
    ("lotion", lotion, False), ("hat", hat, True), ("snack bag", snack_bag, False), ("scarf", scarf, True),
    ("sunglasses", sunglasses, True), ("phone", phone, False), ("watch", watch, True), ("socks", sock, True),
    ("mug", mug, False), ("necklace", necklace, True), ("cereal box", cereal_box, False), ("headphones", headphones, False),
    ("kettle", kettle, False), ("pan", pan, False), ("toy bear", toy_bear, False), ("book", book, False),
    ("ball", ball, False), ("umbrella", umbrella, False),
]

CATEGORIES: tuple[Category, ...] = tuple(Category(i, n, f, fa) for i, (n, f, fa) in enumerate(_FAMILY))
assert len(CATEGORIES) == 34


def category_prior(alpha: float, fashion_only: bool = False) -> np.ndarray:
    """Long-tailed category probabilities: rank ``k`` weighs ``(k + 1) ** -alpha``."""
    w = np.array([(k + 1.0) ** -alpha for k in range(len(CATEGORIES))])
    if fashion_only:
        w = w * np.array([c.fashion for c in CATEGORIES], dtype=float)
    return w / w.sum()


# ----------------------------------------------------------------------------- appearance vocab
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 32, 40), "pink": (236, 132, 172), "orange": (238, 128, 32), "yellow": (238, 208, 52),
    "green": (48, 148, 62), "olive": (118, 128, 52), "teal": (30, 138, 140), "blue": (42, 92, 200),
    "navy": (26, 36, 92), "purple": (122, 52, 152), "brown": (118, 76, 42), "beige": (214, 194, 160),
    "white": (240, 240, 234), "grey": (128, 128, 134), "black": (26, 26, 30),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
PATTERNS: tuple[str, ...] = ("plain", "stripes", "dots", "checks")
LOGOS: tuple[str, ...] = ("none", "star", "circle", "triangle", "cross", "diamond", "ring", "bar")
