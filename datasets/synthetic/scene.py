"""The livestream scene: a stage (room + host) and the frames of one clip with the intent box.

A :class:`Stage` belongs to one livestream (LPR4M) or one video (MovingFashion): a wall with a
colour gradient, shelves with clutter blocks (coloured like the livestream's products, so that
colour statistics of a frame say little), a table, and a host (a person-like figure: head, hair,
torso in the host's own clothes, arms). :func:`render_clip` composes, frame by frame: the room
(with a small camera shift), the host (swaying), the distractor products on the table or shelves,
the intent product held in front of the host (moving, rotated, scaled, visible only in a window of
frames), the holding arm and hand (covering part of the product in some frames), then lighting
changes, blur and sensor noise. JPEG artefacts are added by the writer (per-clip quality).

The intent product's box in a frame is the tight box of its rendered alpha (threshold 8/255),
computed from the same pixels that are pasted, and always lies inside the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.synthetic.catalog import COLOURS
from datasets.synthetic.knobs import Knobs
from datasets.synthetic.products import ProductSpec, fit, sprite

SKIN = ((241, 204, 176), (224, 178, 140), (198, 144, 104), (150, 100, 70), (102, 68, 46))
HAIR = ((20, 16, 14), (60, 40, 24), (120, 80, 40), (200, 170, 110), (140, 60, 30), (90, 90, 95))
MARGIN = 6  # camera shift room around the frame, pixels
ALPHA_MIN = 8  # alpha above this is "the product" for the box

SCALES = ("small", "medium", "large")
# worn garment's longer side / torso width, per scale: the garment dresses the host from the
# shoulders down, as the person in a MovingFashion video wears the product (v6 drew it 0.55-1.05
# torso widths, a patch on the chest that every method missed)
WORN_FRACTION = (1.3, 1.65, 2.0)
DURATIONS = ("short", "medium", "long")
NUMBERS = ("single", "few", "many")


@dataclass(frozen=True)
class ClipAttrs:
    scale: str  # small | medium | large
    duration: str  # short | medium | long
    number: str  # single | few | many
    worn: bool = False  # MovingFashion garments: the product sits on the host's torso


@dataclass
class Stage:
    """Pre-rendered pixels of one livestream's room and host."""

    background: np.ndarray  # [H + 2M, W + 2M, 3] uint8
    host: Image.Image  # RGBA, frame size
    host_x: float  # host centre, pixels
    skin: tuple[int, int, int]
    sleeve: tuple[int, int, int]
    shoulder: tuple[float, float]  # right shoulder (image left) of the host, pixels
    torso: tuple[float, float, float, float]  # torso box, pixels
    table_y: float
    shelf_ys: tuple[float, ...]
    size: tuple[int, int]  # (W, H)


def make_stage(
    seed: int, size: tuple[int, int], product_rgbs: Sequence[tuple[int, int, int]], knobs: Knobs, *, clean: bool = False
) -> Stage:
    """A livestream's room and host from ``seed``; ``clean`` gives a plain studio (few shelves)."""
    rng = np.random.default_rng(seed)
    w, h = size
    big_w, big_h = w + 2 * MARGIN, h + 2 * MARGIN
    wall = np.array(
        COLOURS[str(rng.choice(["beige", "white", "grey", "pink", "teal", "blue", "brown", "olive"]))], np.float32
    )
    wall = wall * rng.uniform(0.7, 1.1) + rng.uniform(-20, 20, 3)
    wall2 = wall * rng.uniform(0.6, 1.0)
    t = np.linspace(0, 1, big_h, dtype=np.float32)[:, None, None]
    bg = wall * (1 - t) + wall2 * t + np.zeros((1, big_w, 1), np.float32)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    shelf_ys: list[float] = []
    n_shelves = 0 if clean else int(rng.integers(1, 3))
    for k in range(n_shelves):
        y = big_h * (0.22 + 0.22 * k + rng.uniform(-0.04, 0.04))
        shelf_ys.append(y - MARGIN)
        d.rectangle([0, y, big_w, y + 3], fill=tuple(int(c) for c in rng.integers(60, 160, 3)))
    palette = list(product_rgbs) or [tuple(int(c) for c in rng.integers(0, 255, 3))]
    for _ in range(0 if clean else knobs.clutter):
        cw, ch = rng.uniform(4, 14, 2) * (w / 128)
        x = rng.uniform(0, big_w - cw)
        y = (shelf_ys[int(rng.integers(len(shelf_ys)))] + MARGIN - ch) if shelf_ys else rng.uniform(0, big_h * 0.5)
        base = np.array(palette[int(rng.integers(len(palette)))], np.float32) + rng.uniform(-25, 25, 3)
        d.rectangle([x, y, x + cw, y + ch], fill=tuple(int(c) for c in np.clip(base, 0, 255)))
    table_y = h * rng.uniform(0.78, 0.86)
    table_rgb = tuple(int(c) for c in rng.integers(40, 200, 3))
    d.rectangle([0, table_y + MARGIN, big_w, big_h], fill=table_rgb)
    background = np.asarray(img, dtype=np.uint8).copy()

    # the host
    skin = SKIN[int(rng.integers(len(SKIN)))]
    hair = HAIR[int(rng.integers(len(HAIR)))]
    top_name = str(rng.choice(list(COLOURS)))
    top = tuple(int(c) for c in np.clip(np.array(COLOURS[top_name]) + rng.integers(-15, 16, 3), 0, 255))
    s = min(w, h) / 128 * rng.uniform(0.9, 1.1)
    cx = w * rng.uniform(0.4, 0.6)
    head_r = 11 * s
    head_y = h * 0.2
    host = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    hd = ImageDraw.Draw(host)
    long_hair = rng.random() < 0.5
    if long_hair:
        hd.rounded_rectangle(
            [cx - head_r * 1.2, head_y - head_r * 1.1, cx + head_r * 1.2, head_y + head_r * 2.4],
            radius=head_r,
            fill=hair + (255,),
        )
    shoulder_y = head_y + head_r * 1.9
    torso = (cx - 24 * s, shoulder_y, cx + 24 * s, h + 2.0)
    hd.rounded_rectangle([torso[0], torso[1], torso[2], torso[3]], radius=8 * s, fill=top + (255,))
    hd.rectangle([cx - 4 * s, head_y + head_r * 0.8, cx + 4 * s, shoulder_y + 2], fill=skin + (255,))
    hd.ellipse([cx - head_r, head_y - head_r, cx + head_r, head_y + head_r * 1.15], fill=skin + (255,))
    hd.chord(
        [cx - head_r * 1.05, head_y - head_r * 1.2, cx + head_r * 1.05, head_y + head_r * 0.6],
        180,
        360,
        fill=hair + (255,),
    )
    eye = max(1.0, 1.4 * s)
    for ex in (cx - head_r * 0.4, cx + head_r * 0.4):
        hd.ellipse([ex - eye, head_y - eye * 0.3, ex + eye, head_y + eye * 1.2], fill=(30, 25, 25, 255))
    # the idle arm (image right), down along the torso
    hd.line(
        [(torso[2] - 3 * s, shoulder_y + 4 * s), (torso[2] + 4 * s, h * 0.8)],
        fill=top + (255,),
        width=max(2, int(8 * s)),
    )
    hd.ellipse([torso[2] + s, h * 0.8 - 4 * s, torso[2] + 9 * s, h * 0.8 + 4 * s], fill=skin + (255,))
    return Stage(
        background=background,
        host=host,
        host_x=cx,
        skin=skin,
        sleeve=top,
        shoulder=(torso[0] + 4 * s, shoulder_y + 4 * s),
        torso=torso,
        table_y=table_y,
        shelf_ys=tuple(shelf_ys),
        size=(w, h),
    )


@lru_cache(maxsize=4)
def _noise_bank(w: int, h: int) -> np.ndarray:
    """Unit Gaussian noise tiles from a fixed seed (per-frame noise = a random tile and offset)."""
    return np.random.default_rng(20240229).standard_normal((4, h + 16, w + 16, 3)).astype(np.float32)


@dataclass
class ClipRender:
    frames: list[np.ndarray]  # [H, W, 3] uint8 each
    boxes: list[Optional[tuple[int, int, int, int]]]  # intent box per frame (None: not visible)
    distractor_boxes: list[list[tuple[int, int, int, int]]]  # other products' boxes per frame
    masks: Optional[list[Optional[np.ndarray]]] = None  # intent alpha per frame, [H, W] uint8 (debug)


_ALPHA_LUT = [255 if a > ALPHA_MIN else 0 for a in range(256)]


def _alpha_box(img: Image.Image, x: int, y: int) -> Optional[tuple[int, int, int, int]]:
    bb = img.getchannel("A").point(_ALPHA_LUT).getbbox()
    if bb is None:
        return None
    return (x + bb[0], y + bb[1], x + bb[2], y + bb[3])


def _rotated(img: Image.Image, angle: float) -> Image.Image:
    if abs(angle) < 0.5:
        return img
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)


def render_clip(
    stage: Stage,
    intent: ProductSpec,
    distractors: Sequence[ProductSpec],
    attrs: ClipAttrs,
    n_frames: int,
    knobs: Knobs,
    seed: int,
    *,
    return_masks: bool = False,
) -> ClipRender:
    """Render ``n_frames`` frames of one clip; see the module docstring for the composition."""
    rng = np.random.default_rng(seed)
    w, h = stage.size
    unit = min(w, h) / 128.0
    si = SCALES.index(attrs.scale)
    lo, hi = knobs.scale_px[si]
    base_size = rng.uniform(lo, hi) * unit
    # visibility window
    dlo, dhi = knobs.duration_frac[DURATIONS.index(attrs.duration)]
    n_vis = int(np.clip(round(rng.uniform(dlo, dhi) * n_frames), 1, n_frames))
    start = int(rng.integers(0, n_frames - n_vis + 1))
    visible = np.zeros(n_frames, bool)
    visible[start : start + n_vis] = True
    # trajectory of the held product
    if attrs.worn:
        tx0, ty0, tx1, ty1 = stage.torso
        c0 = np.array([(tx0 + tx1) / 2, ty0 + (min(ty1, h) - ty0) * 0.45])
        base_size = (tx1 - tx0) * WORN_FRACTION[si] * rng.uniform(0.9, 1.1)  # worn: relative to the torso
    else:
        c0 = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.38, 0.75) * h])
    drift = rng.uniform(-1, 1, 2) * knobs.motion * min(w, h)
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0)
    angle0 = rng.uniform(-knobs.rotation_deg, knobs.rotation_deg)
    cam = rng.integers(0, 2 * MARGIN + 1, 2)
    gain = 1.0 + rng.uniform(-knobs.lighting, knobs.lighting)
    tint = 1.0 + rng.uniform(-knobs.lighting, knobs.lighting, 3) * 0.3
    sway = rng.uniform(-3, 3) * unit

    # distractors: fixed spots on the table, the shelves, or held in the idle hand
    base_sprite = sprite(intent)
    placed: list[tuple[Image.Image, int, int, Optional[tuple[int, int, int, int]]]] = []
    for spec in distractors:
        d_si = int(rng.choice(3, p=np.asarray(knobs.scale_probs)))
        d_size = rng.uniform(*knobs.scale_px[d_si]) * unit * 0.9
        sp = fit(sprite(spec), d_size)
        spot = rng.random()
        if spot < 0.6 or not stage.shelf_ys:
            x = rng.uniform(0, w - sp.width)
            y = stage.table_y - sp.height * rng.uniform(0.5, 0.95)
        elif spot < 0.85:
            x = rng.uniform(0, w - sp.width)
            y = stage.shelf_ys[int(rng.integers(len(stage.shelf_ys)))] - sp.height + 1
        else:
            x = stage.torso[2] - sp.width * 0.3
            y = h * 0.8 - sp.height * 0.8
        x = float(np.clip(x, 0, max(0, w - sp.width)))
        y = float(np.clip(y, 0, max(0, h - sp.height)))
        placed.append((sp, int(round(x)), int(round(y)), _alpha_box(sp, int(round(x)), int(round(y)))))

    bank = _noise_bank(w, h)
    frames: list[np.ndarray] = []
    boxes: list[Optional[tuple[int, int, int, int]]] = []
    dboxes: list[list[tuple[int, int, int, int]]] = []
    masks: list[Optional[np.ndarray]] = []
    for t in range(n_frames):
        u = t / max(1, n_frames - 1)
        jx, jy = (cam + rng.integers(-1, 2, 2)).clip(0, 2 * MARGIN)
        frame = Image.fromarray(stage.background[jy : jy + h, jx : jx + w])
        frame.paste(stage.host, (int(round(sway * np.sin(2 * np.pi * u + phase))), 0), stage.host)
        fboxes = []
        for sp, x, y, bb in placed:
            frame.paste(sp, (x, y), sp)
            if bb is not None:
                fboxes.append(bb)
        box = None
        mask = None
        if visible[t]:
            size = base_size * (1 + 0.08 * np.sin(2 * np.pi * freq * u + phase))
            angle = 0.0 if attrs.worn else angle0 + rng.normal(0, knobs.rotation_deg / 6 + 1e-6)
            sp = _rotated(fit(base_sprite, size), angle)
            centre = c0 + drift * (u - 0.5) + rng.normal(0, 0.8 * unit, 2)
            x = int(round(np.clip(centre[0] - sp.width / 2, 0, max(0, w - sp.width))))
            y = int(round(np.clip(centre[1] - sp.height / 2, 0, max(0, h - sp.height))))
            sp = sp.crop((0, 0, min(sp.width, w - x), min(sp.height, h - y)))
            frame.paste(sp, (x, y), sp)
            box = _alpha_box(sp, x, y)
            if return_masks:
                mask = np.zeros((h, w), np.uint8)
                a = np.asarray(sp.getchannel("A"))
                mask[y : y + a.shape[0], x : x + a.shape[1]] = a
            if box is not None and not attrs.worn:
                _draw_hand(frame, stage, box, rng, knobs, unit)
        boxes.append(box)
        masks.append(mask)
        dboxes.append(fboxes)
        if knobs.blur_rate > 0 and rng.random() < knobs.blur_rate:
            frame = frame.filter(ImageFilter.BoxBlur(float(rng.uniform(*knobs.blur_radius)) * unit))  # ~defocus, cheap
        flicker = 1.0 + rng.normal(0, knobs.lighting / 6 + 1e-6)
        k, ox, oy = int(rng.integers(4)), int(rng.integers(16)), int(rng.integers(16))
        arr = np.asarray(frame, dtype=np.float32) * (gain * flicker * tint)
        if knobs.noise_std > 0:
            arr += bank[k, oy : oy + h, ox : ox + w] * knobs.noise_std
        frames.append(np.clip(arr, 0, 255).astype(np.uint8))
    return ClipRender(frames=frames, boxes=boxes, distractor_boxes=dboxes, masks=masks if return_masks else None)


def _draw_hand(
    frame: Image.Image,
    stage: Stage,
    box: tuple[int, int, int, int],
    rng: np.random.Generator,
    knobs: Knobs,
    unit: float,
) -> None:
    """The holding arm from the host's shoulder and the hand at the product (covering it sometimes)."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    occlude = rng.random() < knobs.occlusion_rate
    r = max(2.5 * unit, 0.18 * max(bw, bh))
    if occlude:
        frac = rng.uniform(*knobs.occlusion_extent)
        r = max(r, 0.5 * frac * max(bw, bh))
        hx = x1 + bw * rng.uniform(0.25, 0.75)
        hy = y1 + bh * rng.uniform(0.3, 0.8)
    else:
        hx = x1 + bw * rng.uniform(0.3, 0.7)
        hy = y2 + r * 0.2
    d = ImageDraw.Draw(frame)
    d.line([stage.shoulder, (hx, hy + r)], fill=stage.sleeve, width=max(2, int(7 * unit)))
    d.ellipse([hx - r, hy - r * 0.8, hx + r, hy + r * 0.8], fill=stage.skin)
