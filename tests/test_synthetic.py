"""The synthetic generator: determinism, the real loaders on its output, boxes, attributes, cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.core.registry import DATASETS
from datasets.lpr4m import load_lpr4m
from datasets.movingfashion import load_movingfashion
from datasets.records import ClipSource, DatasetSplits, GalleryItem, Query
from datasets.synthetic import generate
from datasets.synthetic.calibration import color_histogram_r1
from datasets.synthetic.catalog import CATEGORIES, COLOURS, category_prior
from datasets.synthetic.generate import MANIFEST, TRUTH
from datasets.synthetic.knobs import PRESETS, SIZES, Knobs, SizeSpec, knobs_from_dict, params_hash
from datasets.synthetic.plan import plan_lpr4m, plan_movingfashion, sample_spec
from datasets.synthetic.products import ProductSpec
from datasets.synthetic.scale import plan_scale
from datasets.synthetic.scene import ALPHA_MIN, ClipAttrs, make_stage, render_clip
from datasets.synthetic.text import CATEGORY_WORDS_ZH, FILLER

TINY = SIZES["tiny"]


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def truth(root: Path) -> dict:
    return json.loads((root / TRUTH).read_text())


def manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth")
    return {
        "release": generate("lpr4m", base / "release", seed=0, size="tiny", workers=1),
        "lpr750k": generate("lpr750k", base / "lpr750k", seed=0, size="tiny", workers=1),
        "mf": generate("movingfashion", base / "mf", seed=0, size="tiny", workers=1),
    }


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files_with_any_worker_count(roots, tmp_path):
    # another interpreter (other string-hash seed), two worker processes
    code = f"from datasets.synthetic import generate; generate('lpr4m', {str(tmp_path / 'again')!r}, seed=0, size='tiny', workers=2)"
    env = dict(os.environ, PYTHONHASHSEED="123")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).resolve().parents[1])
    a, b = tree_hashes(roots["release"]), tree_hashes(tmp_path / "again")
    assert len(a) > 500 and a == b
    mf = generate("movingfashion", tmp_path / "mf", seed=0, size="tiny", workers=2)
    ma, mb = tree_hashes(roots["mf"]), tree_hashes(mf)
    assert any(k.endswith(".mp4") for k in ma) and ma == mb


def test_different_seed_gives_different_files(roots, tmp_path):
    other = generate("lpr4m", tmp_path / "seed1", seed=1, size="tiny", workers=1)
    a, b = tree_hashes(roots["release"]), tree_hashes(other)
    assert a[MANIFEST] != b[MANIFEST]
    ann = lambda h: {k.split("_")[0] + k.split("_")[1]: v for k, v in h.items() if k.startswith("annotations/")}  # noqa: E731
    assert set(ann(a).values()).isdisjoint(ann(b).values())
    assert set(k for k in a if k.startswith("frames/")).isdisjoint(k for k in b if k.startswith("frames/"))


# ----------------------------------------------------------------------------- real loaders
def test_release_layout_loads_with_expected_counts(roots):
    root = roots["release"]
    counts, t = manifest(root)["counts"], truth(root)
    splits = load_lpr4m(root)
    assert splits.layout == "lpr4m-release" and splits.grouped
    assert len(splits.train) == counts["train_clips"] and 30 <= counts["train_clips"] <= 60
    assert len(splits.queries) == counts["test_queries"] == 20
    assert len(splits.gallery) == counts["gallery_images"]
    assert len({g.group for g in splits.gallery}) == TINY.test_lives
    # the intent product is the ground truth, and it is in the query's own gallery group
    for q in splits.queries:
        clip = t["clips"][q.query_id]
        assert clip["split"] == "test" and q.gt_ids[0] == clip["intent"] and list(q.gt_ids) == clip["gt"]
        group = {g.image_id for g in splits.gallery if g.group == q.group}
        assert set(q.gt_ids) <= group and set(clip["distractors"]) <= group
        assert len(q.clip.frame_paths) == clip["n_frames"]
    for p in splits.train:
        assert t["clips"][p.clip.clip_id]["intent"] == p.image_id == p.product_id
        assert p.image_path.is_file() and all(f.is_file() for f in p.clip.frame_paths)
    # training and test livestreams and products are disjoint; test categories were seen in training
    train_lives = {p.clip.clip_id[:36] for p in splits.train}
    assert train_lives.isdisjoint({q.group for q in splits.queries})
    assert {p.image_id for p in splits.train}.isdisjoint({g.image_id for g in splits.gallery})
    assert {g.category for g in splits.gallery} <= {p.category for p in splits.train}


def test_lpr750k_layout_loads_the_same_world(roots):
    rel, k750 = load_lpr4m(roots["release"]), load_lpr4m(roots["lpr750k"])
    assert k750.layout == "lpr750k"
    assert [(p.clip.clip_id, p.image_id, p.title, p.category, p.clip.asr) for p in rel.train] == [
        (p.clip.clip_id, p.image_id, p.title, p.category, p.clip.asr) for p in k750.train
    ]
    assert [
        (q.query_id, q.gt_ids, q.group, dict(q.attributes), dict(q.clip.boxes), q.clip.asr) for q in rel.queries
    ] == [(q.query_id, q.gt_ids, q.group, dict(q.attributes), dict(q.clip.boxes), q.clip.asr) for q in k750.queries]
    assert sorted((g.group, g.image_id, g.title) for g in rel.gallery) == sorted(
        (g.group, g.image_id, g.title) for g in k750.gallery
    )
    assert all(f.is_file() for q in k750.queries for f in q.clip.frame_paths)
    assert all(g.image_path.is_file() and g.image_path.parent.name == g.group for g in k750.gallery)
    assert all("training_video_0" in str(p.clip.frame_paths[0]) and p.image_path.is_file() for p in k750.train)


def test_movingfashion_layout_loads_and_reports_missing_videos(roots):
    root = roots["mf"]
    counts, t = manifest(root)["counts"], truth(root)
    from datasets.synthetic.loaders import load_movingfashion_synth

    # the real loader leaves the query of a missing test video out, as RICE's evaluation does
    assert len(load_movingfashion(root).queries) == counts["test_videos"] - 1
    splits = load_movingfashion_synth(root)  # movingfashion-synth counts it as a miss (its committed rows)
    missing = sorted(f"videos/{name}.mp4" for name, v in t["videos"].items() if v["missing"])
    assert counts["train_missing_videos"] == 1 and counts["test_missing_videos"] == 1
    assert splits.missing == missing and not splits.grouped
    assert all(not (root / m).exists() for m in missing)
    assert len(splits.train) == counts["train_videos"] - 1
    assert len(splits.queries) == counts["test_videos"] == counts["test_products"] == len(splits.gallery)
    missing_q = [q for q in splits.queries if q.missing]
    assert len(missing_q) == 1 and f"videos/{missing_q[0].query_id}.mp4" in missing
    for q in splits.queries:
        assert q.gt_ids == (t["videos"][q.query_id]["product"],)
        assert q.attributes["source"] == t["products"][q.gt_ids[0]]["source"]
    assert {q.attributes["source"] for q in splits.queries} == {"hard", "regular"}
    assert any(len(p.clip.boxes) > 0 for p in splits.train)  # tracklets present


def test_movingfashion_videos_decode_with_boxes_inside(roots):
    from datasets.decoding import VideoFile

    splits = load_movingfashion(roots["mf"])
    w, h = TINY.mf_frame_size
    tracked = [q for q in splits.queries if not q.missing and q.clip.boxes][:3]
    assert len(tracked) == 3
    for q in tracked:
        video = VideoFile(q.clip.video_path)
        assert video.fps == TINY.mf_fps and video.num_frames >= TINY.mf_seconds[0] * TINY.mf_fps
        frames = video.get([0, video.num_frames - 1])
        assert tuple(frames.shape[1:]) == (3, h, w)
        for idx, (x1, y1, x2, y2) in q.clip.boxes.items():
            assert 0 <= idx < video.num_frames and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


# ----------------------------------------------------------------------------- boxes and attributes
def test_boxes_lie_inside_the_stored_frames(roots):
    splits = load_lpr4m(roots["release"])
    n_boxes = 0
    for item in list(splits.queries) + list(splits.train):
        clip = item.clip
        with Image.open(clip.frame_paths[0]) as im:
            w, h = im.size
        assert (w, h) == TINY.frame_size
        for pos, (x1, y1, x2, y2) in clip.boxes.items():
            assert 0 <= pos < len(clip.frame_paths)
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            n_boxes += 1
        assert len(clip.boxes) >= 1  # the product is visible in at least one frame
    assert n_boxes > 200


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


def test_attributes_are_present_and_valid(roots):
    splits = load_lpr4m(roots["release"])
    allowed = {
        "scale": {"small", "medium", "large"},
        "duration": {"short", "medium", "long"},
        "num_products": {"single", "few", "many"},
    }
    names = {c.name for c in CATEGORIES}
    for item in list(splits.queries) + list(splits.train):
        a = item.attributes
        assert a["category"] in names
        for key, values in allowed.items():
            assert a[key] in values
    t = truth(roots["release"])
    for q in splits.queries:  # attributes in the files are the ones rendered
        c = t["clips"][q.query_id]
        assert (q.attributes["scale"], q.attributes["duration"], q.attributes["num_products"]) == (
            c["scale"],
            c["duration"],
            c["num_products"],
        )
        assert len(c["distractors"]) == {"single": 0}.get(c["num_products"], len(c["distractors"]))
    # ASR mentions the product's attributes most of the time; some transcripts are empty
    asr = [q.clip.asr for q in splits.queries] + [p.clip.asr for p in splits.train]
    assert any(a == "" for a in asr) and sum(bool(a) for a in asr) > len(asr) // 2
    zh = {c.name: CATEGORY_WORDS_ZH[c.cid] for c in CATEGORIES}  # the text is Chinese by default
    hits = sum(zh[t["products"][p.image_id]["category"]] in p.clip.asr for p in splits.train if p.clip.asr)
    assert hits >= 0.4 * sum(bool(p.clip.asr) for p in splits.train)


# ----------------------------------------------------------------------------- catalogue and plan
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


def test_worn_garments_cover_the_torso():
    knobs = Knobs(lighting=0.0, noise_std=0.0, blur_rate=0.0)
    stage = make_stage(2, (96, 128), [], knobs, clean=True)
    torso_w = stage.torso[2] - stage.torso[0]
    for scale, frac in (("small", 1.3), ("large", 2.0)):
        r = render_clip(stage, _plain(0, "red"), [], ClipAttrs(scale, "long", "single", worn=True), 6, knobs, 0)
        widths = [b[2] - b[0] for b in r.boxes if b is not None]
        heights = [b[3] - b[1] for b in r.boxes if b is not None]
        assert widths and 0.8 * frac * torso_w <= max(max(widths), max(heights)) <= 1.25 * frac * torso_w


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


def test_scale_size_writes_annotations_only(tmp_path):
    small = SizeSpec(
        name="scale-test", pixels=False, scale_queries=120, scale_gallery=400, scale_groups=5, scale_train_pairs=30
    )
    root = generate("lpr4m", tmp_path / "scale", seed=0, size=small)
    splits = load_lpr4m(root)
    assert len(splits.queries) == 120 and len(splits.gallery) == 400 and len(splits.train) == 30
    assert not any(p.suffix == ".jpg" for p in root.rglob("*"))
    assert all(len(q.clip.frame_paths) == 10 and q.clip.boxes for q in splits.queries)
    with pytest.raises(ValueError, match="annotations-only"):
        generate("movingfashion", tmp_path / "mf", seed=0, size=small)


def test_sample_spec_respects_a_forced_colour():
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng, 3, Knobs(), "navy") for _ in range(50)]
    assert all(s.colour == "navy" and s.colour2 != "navy" for s in specs)
    assert len({(s.pattern, s.logo) for s in specs}) > 10


# ----------------------------------------------------------------------------- knobs and cache
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


def test_generate_reuses_regenerates_and_refuses_foreign_folders(tmp_path):
    small = dataclasses.replace(
        TINY, train_lives=1, test_lives=1, products_per_live=(3, 3), queries_per_live=(2, 2), frames_per_clip=(3, 3)
    )
    root = generate("lpr4m", tmp_path / "d", seed=0, size=small)
    stamp = (root / MANIFEST).stat().st_mtime_ns
    assert generate("lpr4m", tmp_path / "d", seed=0, size=small) == root
    assert (root / MANIFEST).stat().st_mtime_ns == stamp  # reused
    generate("lpr4m", tmp_path / "d", seed=0, size=small, knobs={"noise_std": 0.0})
    assert manifest(root)["knobs"]["noise_std"] == 0.0  # knobs changed -> regenerated in place
    assert not list(tmp_path.glob(".d.tmp-*")) and not list(tmp_path.glob(".d.old-*"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing"):
        generate("lpr4m", foreign, seed=0, size=small)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_cached_root_is_verified_against_its_manifest_before_reuse(tmp_path, capsys):
    """A file changed, added or removed after generation (same size included) is not read as the
    set the key names: the root is regenerated, with one warning line, and ends byte-identical."""
    small = dataclasses.replace(
        TINY, train_lives=1, test_lives=1, products_per_live=(3, 3), queries_per_live=(2, 2), frames_per_clip=(3, 3)
    )
    root = generate("lpr4m", tmp_path / "d", seed=0, size=small)
    files = manifest(root)["files"]
    assert TRUTH in files and MANIFEST not in files and len(files) == len(tree_hashes(root)) - 1
    clean = tree_hashes(root)
    victim = sorted(p for p in root.rglob("*.jpg"))[0]
    rel = victim.relative_to(root).as_posix()
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    victim.write_bytes(bytes(data))
    generate("lpr4m", tmp_path / "d", seed=0, size=small)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: cached synthetic set {root}: {rel} differs from the generated file (sha256); regenerating it"
    ]
    assert tree_hashes(root) == clean
    (root / "extra.py").write_text("print('x')\n")
    generate("lpr4m", tmp_path / "d", seed=0, size=small)
    assert (
        capsys.readouterr().err.strip().endswith("0 file(s) missing, 1 not generated (e.g. extra.py); regenerating it")
    )
    assert tree_hashes(root) == clean
    stamp = (root / MANIFEST).stat().st_mtime_ns
    generate("lpr4m", tmp_path / "d", seed=0, size=small)
    assert (root / MANIFEST).stat().st_mtime_ns == stamp and capsys.readouterr().err == ""  # intact: reused


def test_registered_synthetic_datasets_generate_into_the_cache(tmp_path, monkeypatch, roots):
    monkeypatch.setenv("LPR_BENCH_SYNTH_KNOBS", json.dumps({"noise_std": 2.0}))
    import datasets.synthetic  # noqa: F401  (registers)

    splits = DATASETS.get("lpr4m-synth")(None, size="tiny", seed=0, cache_dir=tmp_path)
    assert splits.name == "lpr4m-synth" and splits.layout == "lpr4m-release" and len(splits.queries) == 20
    (cached,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert cached.name.startswith("lpr4m-release-tiny-0-") and manifest(cached)["knobs"]["noise_std"] == 2.0
    monkeypatch.setenv("LPR_BENCH_SYNTH_LAYOUT", "lpr750k")
    assert DATASETS.get("lpr4m-synth")(None, size="tiny", seed=0, cache_dir=tmp_path).layout == "lpr750k"
    monkeypatch.delenv("LPR_BENCH_SYNTH_KNOBS")
    mf = DATASETS.get("movingfashion-synth")(roots["mf"], size="tiny", seed=0)  # an existing root is loaded as is
    assert mf.name == "movingfashion-synth" and len(mf.missing) == 2


# ----------------------------------------------------------------------------- calibration baseline
def _solid(path: Path, rgb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((32, 32, 3), 250, np.uint8)
    arr[6:26, 6:26] = rgb
    Image.fromarray(arr).save(path, quality=95)
    return path


def test_color_histogram_r1_ranks_by_colour_within_groups(tmp_path):
    colours = {"r": (200, 30, 30), "g": (30, 180, 40), "b": (30, 40, 200), "y": (230, 210, 40)}
    gallery = [
        GalleryItem(k, _solid(tmp_path / f"g/{k}.jpg", c), group="A" if k in "rg" else "B") for k, c in colours.items()
    ]

    def query(qid, colour, gt, group, scale):
        frames = tuple(_solid(tmp_path / f"q/{qid}-{i}.jpg", colours[colour]) for i in range(3))
        return Query(qid, ClipSource(qid, frame_paths=frames), (gt,), group=group, attributes={"scale": scale})

    queries = [
        query("q1", "r", "r", "A", "large"),
        query("q2", "g", "g", "A", "large"),
        query("q3", "b", "b", "B", "small"),
        query("q4", "b", "y", "B", "small"),
    ]  # q4 shows blue but its ground truth is yellow: a miss
    queries.append(Query("q5", ClipSource("q5"), ("r",), group="A", attributes={"scale": "small"}, missing=True))
    splits = DatasetSplits("toy", tmp_path, [], queries, gallery, "0")
    out = color_histogram_r1(splits, ks=(1, 2))
    assert out["r1"] == pytest.approx(60.0) and out["r2"] == pytest.approx(80.0)  # q5 is a miss even at k=2
    assert out["chance_r1"] == pytest.approx(50.0) and out["num_queries"] == 5
    assert out["per_attribute"]["scale"] == {
        "large": {"r1": 100.0, "n": 2},
        "small": {"r1": pytest.approx(100 / 3), "n": 3},
    }


def test_color_histogram_is_near_chance_on_whole_frames_and_better_with_boxes(roots):
    splits = load_lpr4m(roots["release"])
    whole = color_histogram_r1(splits)
    boxed = color_histogram_r1(splits, use_boxes=True)
    assert whole["num_queries"] == 20 and set(whole["per_attribute"]) == {
        "category",
        "scale",
        "duration",
        "num_products",
    }
    assert boxed["r1"] > whole["r1"]


# ----------------------------------------------------------------------------- text language
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
