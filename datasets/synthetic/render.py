"""Pixels for planned items: shop-image JPEGs, and one livestream's clips as JPEG frames.

Everything is a deterministic function of seeds stored in the plan: the same plan renders to
byte-identical files in any process. JPEGs are written by Pillow (baseline, no EXIF, no
optimisation pass): shop images at quality 90, frames at their clip's quality.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
from PIL import Image

from datasets.synthetic.knobs import Knobs
from datasets.synthetic.plan import Live, Product
from datasets.synthetic.products import ProductSpec, shop_image
from datasets.synthetic.scene import make_stage, render_clip

SHOP_QUALITY = 90
Box = tuple[int, int, int, int]


def jpeg_bytes(img: Image.Image | np.ndarray, quality: int) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality), optimize=False, progressive=False, subsampling=2)
    return buf.getvalue()


def shop_jpeg(
    spec: ProductSpec, shop_seed: int, size: int, knobs: Knobs, *, title: Optional[str], variant: int = 0
) -> bytes:
    """A shop image: near-white background, the product frontal, the title printed when given."""
    rng = np.random.default_rng([shop_seed, variant])
    bg = tuple(int(c) for c in np.clip(rng.integers(232, 256) + rng.integers(-8, 9, 3), 0, 255))
    fill = float(rng.uniform(*knobs.shop_fill))
    offset = (float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04)))
    img = shop_image(spec, size, bg=bg, fill=fill, title=title, offset=offset)  # type: ignore[arg-type]
    return jpeg_bytes(img, SHOP_QUALITY)


def product_jpegs(product: Product, size: int, knobs: Knobs) -> dict[str, bytes]:
    """image id -> JPEG bytes for a product's shop image(s)."""
    title = product.image_title if product.title_on_image else None
    out = {product.image_id: shop_jpeg(product.spec, product.shop_seed, size, knobs, title=title)}
    if product.extra_image_id:
        out[product.extra_image_id] = shop_jpeg(product.spec, product.shop_seed, size, knobs, title=None, variant=1)
    return out


def render_live_clips(live: Live, frame_size: tuple[int, int], knobs: Knobs):
    """Yield ``(clip, ClipRender)`` for every clip of ``live`` (one stage for the whole live)."""
    stage = make_stage(live.stage_seed, frame_size, [p.spec.rgb for p in live.products], knobs, clean=live.clean_stage)
    for clip in live.clips:
        render = render_clip(
            stage,
            live.products[clip.intent].spec,
            [live.products[i].spec for i in clip.distractors],
            clip.attrs,
            clip.n_frames,
            knobs,
            clip.seed,
        )
        yield clip, render
