"""The real loaders on the synthetic generator's layouts (LPR4M release, LPR750K, MovingFashion):
counts, ground truth, missing videos, decodable videos, boxes inside the frames, valid attributes."""

from __future__ import annotations

from PIL import Image

from datasets.lpr4m import load_lpr4m
from datasets.movingfashion import load_movingfashion
from datasets.synthetic.catalog import CATEGORIES
from datasets.synthetic.text import CATEGORY_WORDS_ZH
from tests.synthetic_helpers import TINY, manifest, truth


def test_release_layout_loads_with_expected_counts(synth_roots):
    root = synth_roots["release"]
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


def test_lpr750k_layout_loads_the_same_world(synth_roots):
    rel, k750 = load_lpr4m(synth_roots["release"]), load_lpr4m(synth_roots["lpr750k"])
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


def test_movingfashion_layout_loads_and_reports_missing_videos(synth_roots):
    root = synth_roots["mf"]
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


def test_movingfashion_videos_decode_with_boxes_inside(synth_roots):
    from datasets.decoding import VideoFile

    splits = load_movingfashion(synth_roots["mf"])
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


def test_boxes_lie_inside_the_stored_frames(synth_roots):
    splits = load_lpr4m(synth_roots["release"])
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


def test_attributes_are_present_and_valid(synth_roots):
    splits = load_lpr4m(synth_roots["release"])
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
    t = truth(synth_roots["release"])
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
