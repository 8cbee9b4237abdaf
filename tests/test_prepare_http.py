"""From the URL lists to a submission over real HTTP: a tiny synthetic LPR4M release served on
127.0.0.1, ``prepare`` with the real img2dataset (some URLs made to fail), ``check-data``, an
``--epochs 0`` evaluation; the submission equals the one from the copy prepared without HTTP except
for the failed query, which is counted as a miss. Plus the layout pass's resume on a hand-made shard.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import threading
from pathlib import Path

import pytest

from benchmark.cli.main import main
from datasets.lpr4m import load_lpr4m
from datasets.prepare_lpr4m import layout_shard
from datasets.synthetic.generate import generate
from datasets.synthetic.release import write_release
from tests.prepare_helpers import prepare

pytest.importorskip("img2dataset", reason="the prepare extra (pip install -e '.[prepare]') is not installed")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("release")
    www = base / "rel" / "www"
    www.mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    root = generate("lpr4m", base / "gen", seed=0, size="tiny", workers=1)
    write_release(
        root, base / "rel", base_url=f"http://127.0.0.1:{server.server_address[1]}/", original_size=(144, 256)
    )
    yield base
    server.shutdown()


def _submission(results: Path) -> dict:
    (path,) = list((results / "submissions").glob("*.json*"))
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def _evaluate(root: Path, work: Path) -> dict:
    rc = main(
        [
            "--method",
            "clip-meanpool",
            "--dataset",
            "lpr4m",
            "--data-root",
            str(root),
            "--profile",
            "tiny",
            "--epochs",
            "0",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--num-workers",
            "0",
            "--no-feature-cache",
            "--output-dir",
            str(work / "runs"),
            "--results-dir",
            str(work / "results"),
            "--no-leaderboard",
        ]
    )
    assert rc == 0
    return _submission(work / "results")


@pytest.mark.slow
def test_prepare_over_http_matches_the_direct_copy_except_failed_items(served, tmp_path, capsys):
    urls, www = served / "rel" / "urls", served / "rel" / "www"
    direct = tmp_path / "direct"
    assert prepare(urls, direct, "--fast", "--processes", "2", "--frames-per-clip", "0") == 0
    # make some URLs fail: every frame of one test clip, one training frame, one training shop image
    gt = json.loads(next(urls.glob("test_videoid_to_gtimage_*.json")).read_text())
    lost_clip = sorted(gt)[3]
    lost = [p for p in www.glob(f"{lost_clip}-*.jpg")]
    train_frame = next(urls.glob("training_frame_url_*.txt")).read_text().split()[5].rsplit("/", 1)[1]
    train_image = next(urls.glob("training_image_url_*.txt")).read_text().split()[2].rsplit("/", 1)[1]
    for p in lost + [www / train_frame, www / train_image]:
        p.unlink()
    viahttp = tmp_path / "viahttp"
    assert (
        prepare(urls, viahttp, "--processes", "1", "--threads", "4", "--shard-size", "64", "--frames-per-clip", "0")
        == 0
    )
    report = json.loads((viahttp / "prepare_report.json").read_text())
    assert report["test_clips_without_frames"] == [lost_clip]
    assert len(report["failed_urls"]) == len(lost) + 2 and report["gallery_images_missing"] == []
    assert report["lists"]["test_frame_url"]["failed"] == len(lost)

    capsys.readouterr()
    assert main(["check-data", "--dataset", "lpr4m", "--data-root", str(viahttp)]) == 0
    out = capsys.readouterr().out
    assert "failed_download" in out and "queries_without_frames: 1" in out and out.strip().endswith("OK")

    s_direct, s_http = load_lpr4m(direct), load_lpr4m(viahttp)
    assert [q.query_id for q in s_http.queries] == [q.query_id for q in s_direct.queries]
    assert [q.query_id for q in s_http.queries if q.missing] == [lost_clip]
    lost_pairs = sum(p.image_id == train_image[:-4] for p in s_direct.train)  # the pairs of the failed shop image
    assert lost_pairs >= 1 and len(s_http.train) == len(s_direct.train) - lost_pairs
    frame_id = train_frame[:-4]
    assert all(frame_id not in {f.stem for f in p.clip.frame_paths} for p in s_http.train)  # a failed frame is left out
    # byte-identical loader input wherever the download succeeded
    for a, b in zip(s_direct.queries, s_http.queries):
        if not b.missing:
            assert [p.read_bytes() for p in a.clip.frame_paths] == [p.read_bytes() for p in b.clip.frame_paths]

    sub_d, sub_h = _evaluate(direct, tmp_path / "eval_direct"), _evaluate(viahttp, tmp_path / "eval_http")
    rank_d, rank_h = dict(sub_d["rankings"]), dict(sub_h["rankings"])
    assert set(rank_d) == set(rank_h) and rank_h[lost_clip] == []
    assert {q: r for q, r in rank_d.items() if q != lost_clip} == {q: r for q, r in rank_h.items() if q != lost_clip}
    n = len(rank_d)
    hit = float(rank_d[lost_clip][0] in gt[lost_clip])
    r1_d, r1_h = sub_d["metrics"]["overall"]["R1"]["value"], sub_h["metrics"]["overall"]["R1"]["value"]
    assert r1_h == pytest.approx(r1_d - 100.0 * hit / n, abs=1e-6)  # the failed query is a miss, same denominator
    assert sub_h["dataset"]["num_queries"] == sub_d["dataset"]["num_queries"] == n


def test_layout_pass_moves_a_shard_once_and_resumes_from_its_marker(tmp_path):
    shards, root = tmp_path / "shards", tmp_path / "root"
    shard = shards / "00000"
    shard.mkdir(parents=True)
    frame = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-1667916122888-1667916252390-0081"
    image = "fff8b484-2eeb-11ee-b7bb-77cb20e634dc"
    for key, stem, status in (
        ("000000000", frame, "success"),
        ("000000001", image, "success"),
        ("000000002", "x-1", "failed_to_download"),
    ):
        meta = {
            "url": f"https://js-ad.a.yximgs.com/bs2/ad-material-video/{stem}.jpg",
            "key": key,
            "status": status,
            "width": 256,
            "height": 455,
            "original_width": 540,
            "original_height": 960,
        }
        (shard / f"{key}.json").write_text(json.dumps(meta))
        if status == "success":
            (shard / f"{key}.jpg").write_bytes(b"\xff\xd8\xff" + stem.encode() + b"\xff\xd9")
    placed = layout_shard(shard, {image}, root, link=False)
    assert sorted(placed) == sorted([frame, image])
    clip = frame.rsplit("-", 1)[0]
    assert (root / "frames" / clip / f"{frame}.jpg").read_bytes().startswith(b"\xff\xd8\xff7b60")
    assert json.loads((root / "frames" / clip / f"{frame}.json").read_text())["original_height"] == 960
    assert (root / "images" / f"{image}.jpg").exists() and not (shard / "000000000.jpg").exists()  # renamed, not copied
    assert layout_shard(shard, {image}, root, link=False) == placed  # a rerun reads the marker


def test_synth_release_writes_what_the_authors_ship(tmp_path, capsys):
    from datasets.decoding import jpeg_size

    out = tmp_path / "syn"
    assert (
        main(
            [
                "synth",
                "--layout",
                "lpr4m",
                "--size",
                "tiny",
                "--out",
                str(out),
                "--release",
                "--original-size",
                "144x256",
                "--base-url",
                "https://cdn.invalid/bs2/",
            ]
        )
        == 0
    )
    urls, www = tmp_path / "syn-release" / "urls", tmp_path / "syn-release" / "www"
    names = sorted(p.name for p in urls.iterdir())
    assert [n for n in names if n.startswith("training_videoinfo_")] == [
        f"training_videoinfo_full_part_0{i}.txt" for i in range(10)
    ]
    lists = {n.rsplit("_", 1)[0]: n for n in names if "_url_" in n}
    assert set(lists) == {"training_frame_url", "training_image_url", "test_frame_url", "test_image_url"}
    for prefix, name in lists.items():
        lines = (urls / name).read_text().split()
        assert name == f"{prefix}_{len(lines)}.txt" and all(u.startswith("https://cdn.invalid/bs2/") for u in lines)
    test_frames = (urls / lists["test_frame_url"]).read_text().split()
    (box_file,) = [n for n in names if n.startswith("test_frameid2gtbox_")]
    gt = json.loads(next(urls.glob("test_videoid_to_gtimage_*.json")).read_text())
    boxes = json.loads((urls / box_file).read_text())
    assert box_file == f"test_frameid2gtbox_{len(gt)}_{len(boxes)}.json" and 0 < len(boxes) < len(test_frames)
    frame = test_frames[0].rsplit("/", 1)[1]
    assert jpeg_size((www / frame).read_bytes()) == (144, 256)  # the portrait original
    assert all(b[0][2] <= 144 and b[0][3] <= 256 for b in boxes.values())  # boxes in original pixels
    rows = [r for i in range(10) for r in (urls / f"training_videoinfo_full_part_0{i}.txt").read_text().splitlines()]
    assert any(r.split("\t")[2] == "[]" for r in rows) and any(r.split("\t")[2] != "[]" for r in rows)


@pytest.mark.slow
def test_reduced_shards_over_http_equal_the_direct_shards(served, tmp_path):
    """``--frames-per-clip 4 --format webdataset`` through the real img2dataset over HTTP: its tars
    (written in download order) indexed, the evaluation equals the shards made without HTTP."""
    urls = served / "rel" / "urls"
    direct, viahttp = tmp_path / "direct", tmp_path / "viahttp"
    common = ["--frames-per-clip", "4", "--format", "webdataset", "--shard-size", "32"]
    assert prepare(urls, direct, "--fast", "--processes", "2", *common) == 0
    assert prepare(urls, viahttp, "--processes", "1", "--threads", "8", *common) == 0
    report = json.loads((viahttp / "prepare_report.json").read_text())
    assert (report["format"], report["frames_per_clip"]) == ("webdataset", 4)
    assert not (viahttp / "frames").exists() and list((viahttp / "shards").glob("*.tar"))
    lists = report["lists"]
    assert lists["training_frame_url"]["urls"] < lists["training_frame_url"]["listed"]
    s_direct, s_http = load_lpr4m(direct), load_lpr4m(viahttp)
    assert [p.clip.frame_positions for p in s_http.train] == [p.clip.frame_positions for p in s_direct.train]
    sub_d, sub_h = _evaluate(direct, tmp_path / "eval_direct"), _evaluate(viahttp, tmp_path / "eval_http")
    assert sub_d["rankings"] == sub_h["rankings"]
