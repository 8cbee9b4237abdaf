"""``prepare --format webdataset``: img2dataset's tar shards and an index instead of per-frame
files; evaluation finds frames through the index, training streams whole clips through
``webdataset`` split by DDP rank, resumes exactly, and a bad shard is named, never skipped
(issue 36, items 2 and 3)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import torch

from benchmark.cli.main import main
from benchmark.core.config import get_profile
from benchmark.reports.browse import write_browser
from benchmark.training.checkpoint import load_checkpoint
from datasets.lpr4m import load_lpr4m
from datasets.shard_store import forget_tables, split_member
from datasets.shard_stream import ShardPairStream, shard_owners
from datasets.torch_data import PairDataset
from tests.prepare_helpers import prepare
from tests.scaleout_helpers import PYTHON, REPO, SMALL_ENCODER, subprocess_env

T = 4  # the tiny profile's frames a clip
SHARD = 16  # samples a shard: the 40 training clips' 160 frames make 10 training shards


pytestmark = pytest.mark.usefixtures("isolated_registry")  # conftest: registrations are forgotten


@pytest.fixture(scope="module")
def roots(tiny_release, tmp_path_factory):
    base = tmp_path_factory.mktemp("shard_roots")
    out = {}
    for fmt in ("files", "webdataset"):
        out[fmt] = base / fmt
        extra = ("--fast", "--processes", "2", "--frames-per-clip", str(T), "--format", fmt, "--shard-size", str(SHARD))
        assert prepare(tiny_release / "urls", out[fmt], *extra) == 0
    return out


def _run(root: Path, work: Path, *extra: str, method: str = "clip-meanpool") -> list[str]:
    plugin = ["--plugin", str(REPO / "tests" / "robust_plugin.py")] if method != "clip-meanpool" else []
    return [
        *plugin,
        "--method",
        method,
        "--dataset",
        "lpr4m",
        "--data-root",
        str(root),
        "--profile",
        "tiny",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--bootstrap",
        "20",
        "--no-feature-cache",
        "--output-dir",
        str(work / "runs"),
        "--results-dir",
        str(work / "res"),
        "--no-leaderboard",
        *extra,
    ]


def _submission(work: Path) -> dict:
    (path,) = list((work / "res" / "submissions").glob("*.json*"))
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def test_a_sharded_root_has_no_per_frame_files_and_names_members_by_index(roots):
    shards = roots["webdataset"]
    assert not (shards / "frames").exists() and not (shards / "images").exists()
    tars = sorted((shards / "shards").glob("*.tar"))
    assert len(tars) >= 10
    s = load_lpr4m(shards)
    member = split_member(s.train[0].clip.frame_paths[0])
    assert member is not None and member[0] in tars
    rows = [line.split("\t") for line in (shards / "shards" / "index.tsv").read_text().splitlines()]
    index = {r[0]: (r[1], r[2]) for r in rows}
    first = s.train[0].clip.frame_paths[0]
    assert index[f"{s.train[0].clip.clip_id}-0"] == (member[0].name, first.stem)  # frame 0: position 0 at any T
    assert len(rows) == 80 + 160 + 20 + 18  # the frames read at T=4 (test, training) and the shop images


def test_files_and_shards_give_identical_items_and_rankings(roots, tmp_path):
    s_files, s_shards = load_lpr4m(roots["files"]), load_lpr4m(roots["webdataset"])
    cfg = get_profile("tiny").data
    products = {p: i for i, p in enumerate(sorted({p.product_id for p in s_files.train}))}
    a = PairDataset(s_files.train, cfg, products, {}, train=True)
    b = PairDataset(s_shards.train, cfg, products, {}, train=True)
    for i in range(len(a)):
        torch.manual_seed(i)
        x = a[i]
        torch.manual_seed(i)
        y = b[i]
        for key in ("frames", "frame_mask", "boxes", "box_mask", "image"):
            assert torch.equal(x[key], y[key]), (i, key)
    assert main(_run(roots["files"], tmp_path / "f", "--epochs", "0")) == 0
    assert main(_run(roots["webdataset"], tmp_path / "w", "--epochs", "0")) == 0
    sub_f, sub_w = _submission(tmp_path / "f"), _submission(tmp_path / "w")
    assert sub_f["rankings"] == sub_w["rankings"] and len(sub_f["rankings"]) == 20
    assert sub_f["metrics"]["overall"] == sub_w["metrics"]["overall"]
    # browse finds a query's frames and the gallery images in the shards: the same thumbnails
    (sub_path,) = list((tmp_path / "w" / "res" / "submissions").glob("*.json*"))
    write_browser(sub_path, tmp_path / "bf", splits=s_files)
    write_browser(sub_path, tmp_path / "bw", splits=s_shards)
    thumbs_f = {p.name: p.read_bytes() for p in (tmp_path / "bf" / "thumbs").iterdir()}
    thumbs_w = {p.name: p.read_bytes() for p in (tmp_path / "bw" / "thumbs").iterdir()}
    assert len([n for n in thumbs_w if n.startswith("q")]) >= 20 and len(thumbs_w) == len(thumbs_f)
    assert sorted(thumbs_f.values()) == sorted(thumbs_w.values())


def _damage(root: Path) -> tuple[Path, Path]:
    tars = sorted((root / "shards").glob("*.tar"))
    cut, bad = tars[1], tars[2]
    with tarfile.open(cut) as tf:
        last = tf.getmembers()[-2]  # the last frame's JPEG (its sidecar follows): cut in its data
    os.truncate(cut, last.offset_data + 100)
    with tarfile.open(bad) as tf:
        offset = tf.getmembers()[4].offset
    with open(bad, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"not a tar header" * 32)
    forget_tables()
    return cut, bad


def test_check_data_names_each_bad_shard_once_and_a_run_refuses(roots, tmp_path, capsys):
    root = tmp_path / "damaged"
    shutil.copytree(roots["webdataset"], root)
    cut, bad = _damage(root)
    capsys.readouterr()
    assert main(["check-data", "--dataset", "lpr4m", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out
    named = [line.strip() for line in out.splitlines() if "shards/" in line]
    assert len(named) == 2, out
    assert named[0].startswith(f"{cut}: truncated shard") and named[1].startswith(
        f"{bad}: corrupt shard: no valid tar header"
    )
    assert "ERROR   corrupt_shard: 2" in out and out.strip().endswith("FAILED: 2 error(s)")
    rc = main(_run(root, tmp_path / "run", "--max-steps", "2", "--batch-size", "4", *SMALL_ENCODER))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc != 0 and len(err) == 1 and ("truncated shard" in err[0] or "corrupt shard" in err[0])
    assert str(cut) in err[0] or str(bad) in err[0]


@pytest.mark.slow
def test_torchrun_two_ranks_stream_distinct_clips(roots, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "run_benchmark.py"),
        *_run(
            roots["webdataset"],
            tmp_path / "two",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            *SMALL_ENCODER,
            method="clip-meanpool-faults",
        ),
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=subprocess_env(LPR_TEST_SEEN_DIR=str(seen)), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _submission(tmp_path / "two")["provenance"]["training"]["world_size"] == 2
    ranks = [[int(i) for i in (seen / f"rank{r}.txt").read_text().split()] for r in (0, 1)]
    assert [len(r) for r in ranks] == [8, 8]  # 2 steps of 4 pairs on each rank
    pairs = load_lpr4m(roots["webdataset"]).train
    clips = [{pairs[i].clip.clip_id for i in r} for r in ranks]
    assert clips[0] and clips[1] and not clips[0] & clips[1]
    # rank r streams the shards at r, r + 2, ... of the epoch's shuffled order
    owners = shard_owners(pairs, T)
    order = ShardPairStream(None, pairs, T, seed=0, epoch=0, owners=owners).shard_order()
    for r in (0, 1):
        mine = {pairs[i].clip.clip_id for s in order[r::2] for i in owners[s]}
        assert clips[r] <= mine


def _last_ckpt(work: Path) -> Path:
    (path,) = list((work / "runs").rglob("last.pt"))
    return path


def _in_process_of_its_own(argv: list[str]) -> int:
    proc = subprocess.run(
        [PYTHON, str(REPO / "run_benchmark.py"), *argv], env=subprocess_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.returncode


def _killed_at(root: Path, work: Path, stall_at: int, step: int) -> dict:
    cmd = [
        PYTHON,
        str(REPO / "run_benchmark.py"),
        *_run(
            root,
            work,
            "--max-steps",
            "8",
            "--batch-size",
            "8",
            "--checkpoint-every",
            "2",
            *SMALL_ENCODER,
            method="clip-meanpool-faults",
        ),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=work.parent,
        env=subprocess_env(LPR_TEST_STALL_AT_CALL=str(stall_at)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            found = list((work / "runs").rglob("last.pt"))
            if found:
                try:
                    state = load_checkpoint(found[0])
                except Exception:  # being written
                    state = None
                if state is not None and state["step"] >= step:
                    return state
            time.sleep(0.1)
        raise AssertionError("no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_streamed_run_resumes_exactly_at_an_epoch_boundary_and_mid_epoch(roots, tmp_path):
    """40 pairs at batch 8: 5 steps an epoch. Killed in step 6 (after the epoch-end checkpoint) or
    in step 4 (after the step-2 one, mid-epoch: the stream replays the epoch's first 2 batches)."""
    root = roots["webdataset"]
    args = ("--max-steps", "8", "--batch-size", "8", "--checkpoint-every", "2", *SMALL_ENCODER)
    ref = tmp_path / "ref"
    # every run in a process of its own, like the killed one: the same thread count (one) and a fresh
    # torch state, whatever earlier tests in this worker set (float sums depend on the thread count)
    assert _in_process_of_its_own(_run(root, ref, *args, method="clip-meanpool-faults")) == 0
    w_ref = load_checkpoint(_last_ckpt(ref))["model"]
    for name, stall_at, step, where in (("boundary", 5, 5, (1, 5, 0)), ("mid", 3, 2, (0, 2, 2))):
        work = tmp_path / name
        work.mkdir()
        state = _killed_at(root, work, stall_at, step)
        assert (state["epoch"], state["step"], state["micro_in_epoch"]) == where
        assert _in_process_of_its_own(_run(root, work, *args, "--resume", method="clip-meanpool-faults")) == 0
        w = load_checkpoint(_last_ckpt(work))["model"]
        assert [k for k in w_ref if not torch.equal(w_ref[k], w[k])] == [], name
        assert _submission(work)["rankings"] == _submission(ref)["rankings"]
