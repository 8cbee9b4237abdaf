"""Product instances and their pixels: an RGBA sprite, and the shop image built from it.

A :class:`ProductSpec` is a fine-grained instance of a category: base colour (a named colour with
a small per-instance RGB offset), a secondary colour, a pattern (plain / stripes / dots / checks
with period and angle), a logo (shape, colour, and whether it shows), a trim colour and three
shape parameters. Two products of one category that share a colour differ only by pattern, logo,
trim or silhouette: the hard negatives of a livestream's gallery.

Sprites are drawn with PIL at ``SPRITE`` px (body and trim masks, 2x supersampled), filled with
numpy, outlined, and cached per process (a product is drawn once, then resized per frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from datasets.synthetic.catalog import CATEGORIES, COLOURS, Op

SPRITE = 96  # sprite canvas side in pixels
_SS = 2  # supersampling of the masks


@dataclass(frozen=True)
class ProductSpec:
    """One product instance (its appearance only; ids live in the world plan)."""

    category: int
    colour: str
    rgb: tuple[int, int, int]
    colour2: str
    rgb2: tuple[int, int, int]
    pattern: str
    period: float  # pattern period in sprite pixels
    angle: int  # stripe angle in degrees (0, 45, 90, 135)
    logo: str
    logo_rgb: tuple[int, int, int]
    trim_rgb: tuple[int, int, int]
    w: float
    h: float
    v: float

    def signature(self) -> tuple:
        """The attributes a viewer can name; used to keep train and test instances apart."""
        return (self.category, self.colour, self.colour2, self.pattern, self.logo, round(self.v, 1))


def jitter_rgb(rng: np.random.Generator, name: str, amount: int) -> tuple[int, int, int]:
    base = np.array(COLOURS[name])
    return tuple(int(x) for x in np.clip(base + rng.integers(-amount, amount + 1, 3), 0, 255))  # type: ignore[return-value]


def _draw_ops(draw: ImageDraw.ImageDraw, ops: tuple[Op, ...], size: int) -> None:
    s = size
    for op in ops:
        kind = op[0]
        if kind == "poly":
            draw.polygon([(x * s, y * s) for x, y in op[1]], fill=255)
        elif kind == "ellipse":
            x0, y0, x1, y1 = op[1]
            draw.ellipse([x0 * s, y0 * s, x1 * s, y1 * s], fill=255)
        elif kind == "rect":
            x0, y0, x1, y1 = op[1]
            draw.rectangle([x0 * s, y0 * s, x1 * s, y1 * s], fill=255)
        elif kind == "rrect":
            x0, y0, x1, y1 = op[1]
            draw.rounded_rectangle([x0 * s, y0 * s, x1 * s, y1 * s], radius=max(1, op[2] * s), fill=255)
        elif kind == "line":
            draw.line([(x * s, y * s) for x, y in op[1]], fill=255, width=max(1, int(op[2] * s)), joint="curve")
        elif kind == "arc":
            x0, y0, x1, y1 = op[1]
            draw.arc([x0 * s, y0 * s, x1 * s, y1 * s], op[2], op[3], fill=255, width=max(1, int(op[4] * s)))
        elif kind == "pie":
            x0, y0, x1, y1 = op[1]
            draw.pieslice([x0 * s, y0 * s, x1 * s, y1 * s], op[2], op[3], fill=255)
        else:  # pragma: no cover - catalogue bug
            raise ValueError(f"unknown drawing op {kind!r}")


def _mask(ops: tuple[Op, ...]) -> np.ndarray:
    big = SPRITE * _SS
    img = Image.new("L", (big, big), 0)
    _draw_ops(ImageDraw.Draw(img), ops, big)
    return np.asarray(img.resize((SPRITE, SPRITE), Image.Resampling.BOX), dtype=np.float32) / 255.0


_YY, _XX = np.mgrid[0:SPRITE, 0:SPRITE].astype(np.float32)


def _pattern(spec: ProductSpec) -> np.ndarray:
    """[S, S] weight of the secondary colour (0 = base colour)."""
    p = spec.period
    if spec.pattern == "plain":
        return np.zeros((SPRITE, SPRITE), np.float32)
    if spec.pattern == "stripes":
        t = np.deg2rad(spec.angle)
        u = _XX * np.cos(t) + _YY * np.sin(t)
        return (np.mod(u, p) < p * 0.5).astype(np.float32)
    if spec.pattern == "dots":
        row = np.floor(_YY / p)
        xs = _XX + (np.mod(row, 2) * p * 0.5)
        dx = np.mod(xs, p) - p * 0.5
        dy = np.mod(_YY, p) - p * 0.5
        return ((dx * dx + dy * dy) < (p * 0.28) ** 2).astype(np.float32)
    if spec.pattern == "checks":
        return (np.mod(np.floor(_XX / p) + np.floor(_YY / p), 2) == 1).astype(np.float32)
    raise ValueError(f"unknown pattern {spec.pattern!r}")


def _logo_mask(kind: str, cx: float, cy: float, r: float) -> np.ndarray:
    big = SPRITE * _SS
    img = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(img)
    x, y, rr = cx * big, cy * big, r * big
    if kind == "star":
        pts = []
        for k in range(10):
            a = -np.pi / 2 + k * np.pi / 5
            rad = rr if k % 2 == 0 else rr * 0.45
            pts.append((x + rad * np.cos(a), y + rad * np.sin(a)))
        d.polygon(pts, fill=255)
    elif kind == "circle":
        d.ellipse([x - rr, y - rr, x + rr, y + rr], fill=255)
    elif kind == "triangle":
        d.polygon([(x, y - rr), (x + rr, y + rr * 0.8), (x - rr, y + rr * 0.8)], fill=255)
    elif kind == "cross":
        t = rr * 0.35
        d.rectangle([x - rr, y - t, x + rr, y + t], fill=255)
        d.rectangle([x - t, y - rr, x + t, y + rr], fill=255)
    elif kind == "diamond":
        d.polygon([(x, y - rr), (x + rr * 0.75, y), (x, y + rr), (x - rr * 0.75, y)], fill=255)
    elif kind == "ring":
        d.ellipse([x - rr, y - rr, x + rr, y + rr], outline=255, width=max(2, int(rr * 0.4)))
    elif kind == "bar":
        d.rectangle([x - rr, y - rr * 0.35, x + rr, y + rr * 0.35], fill=255)
    return np.asarray(img.resize((SPRITE, SPRITE), Image.Resampling.BOX), dtype=np.float32) / 255.0


@lru_cache(maxsize=512)
def sprite(spec: ProductSpec) -> Image.Image:
    """The product as an RGBA image of ``SPRITE`` x ``SPRITE`` px (transparent outside it)."""
    shape = CATEGORIES[spec.category].draw(spec.w, spec.h, spec.v)
    body = _mask(shape.body)
    trim = _mask(shape.trim) if shape.trim else np.zeros_like(body)
    pat = _pattern(spec)[..., None]
    c1 = np.array(spec.rgb, np.float32)
    c2 = np.array(spec.rgb2, np.float32)
    rgb = c1 * (1 - pat) + c2 * pat
    shade = 1.06 - 0.14 * (_YY / SPRITE)[..., None]  # light from above
    rgb = rgb * shade
    if spec.logo != "none":
        lm = _logo_mask(spec.logo, *shape.logo)[..., None] * body[..., None]
        rgb = rgb * (1 - lm) + np.array(spec.logo_rgb, np.float32) * lm
    t = trim[..., None]
    rgb = rgb * (1 - t) + np.array(spec.trim_rgb, np.float32) * t
    alpha = np.maximum(body, trim)
    # a dark outline where the silhouette ends (min-filtered alpha marks the interior)
    a_img = Image.fromarray((alpha * 255).astype(np.uint8))
    inner = np.asarray(a_img.filter(ImageFilter.MinFilter(3)), dtype=np.float32) / 255.0
    edge = np.clip(alpha - inner, 0, 1)[..., None]
    rgb = rgb * (1 - 0.55 * edge)
    out = np.concatenate([np.clip(rgb, 0, 255), (alpha * 255)[..., None]], axis=2).round().astype(np.uint8)
    img = Image.fromarray(out, "RGBA")
    bbox = img.getchannel("A").point([255 if a > 8 else 0 for a in range(256)]).getbbox()
    return img.crop(bbox) if bbox else img


def fit(img: Image.Image, max_side: float) -> Image.Image:
    """Resize ``img`` so that its longer side is ``max_side`` px (at least 2 px)."""
    w, h = img.size
    k = max_side / max(w, h)
    return img.resize((max(2, int(round(w * k))), max(2, int(round(h * k)))), Image.Resampling.BILINEAR)


def shop_image(
    spec: ProductSpec,
    size: int,
    *,
    bg: tuple[int, int, int],
    fill: float,
    title: Optional[str],
    offset: tuple[float, float] = (0.0, 0.0),
) -> Image.Image:
    """The shop (gallery / training) image: the product frontal on a clean background, optional title."""

    canvas = Image.new("RGB", (size, size), bg)
    top_room = 0.16 if title else 0.0
    sp = fit(sprite(spec), size * fill * (1 - top_room))
    x = int(round((size - sp.width) / 2 + offset[0] * size))
    y = int(round((size * (1 + top_room) - sp.height) / 2 + offset[1] * size))
    canvas.paste(sp, (x, y), sp)
    if title:
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=max(8, size // 12))
        draw.text((3, 2), title[:40], fill=(40, 40, 40), font=font)
    return canvas
