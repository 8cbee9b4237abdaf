"""The synthetic generator's output as files: the same seed gives the same bytes (any worker count),
an annotations-only size, and the cache (reused, regenerated, verified, refused, registered datasets)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core.registry import DATASETS
from datasets.lpr4m import load_lpr4m
from datasets.synthetic import generate
from datasets.synthetic.generate import MANIFEST, TRUTH
from datasets.synthetic.knobs import SizeSpec
from tests.synthetic_helpers import TINY, manifest, tree_hashes


def test_same_seed_gives_identical_files_with_any_worker_count(synth_roots, tmp_path):
    # another interpreter (other string-hash seed), two worker processes
    code = f"from datasets.synthetic import generate; generate('lpr4m', {str(tmp_path / 'again')!r}, seed=0, size='tiny', workers=2)"
    env = dict(os.environ, PYTHONHASHSEED="123")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).resolve().parents[1])
    a, b = tree_hashes(synth_roots["release"]), tree_hashes(tmp_path / "again")
    assert len(a) > 500 and a == b
    mf = generate("movingfashion", tmp_path / "mf", seed=0, size="tiny", workers=2)
    ma, mb = tree_hashes(synth_roots["mf"]), tree_hashes(mf)
    assert any(k.endswith(".mp4") for k in ma) and ma == mb


def test_different_seed_gives_different_files(synth_roots, tmp_path):
    other = generate("lpr4m", tmp_path / "seed1", seed=1, size="tiny", workers=1)
    a, b = tree_hashes(synth_roots["release"]), tree_hashes(other)
    assert a[MANIFEST] != b[MANIFEST]
    ann = lambda h: {k.split("_")[0] + k.split("_")[1]: v for k, v in h.items() if k.startswith("annotations/")}  # noqa: E731
    assert set(ann(a).values()).isdisjoint(ann(b).values())
    assert set(k for k in a if k.startswith("frames/")).isdisjoint(k for k in b if k.startswith("frames/"))


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


def test_registered_synthetic_datasets_generate_into_the_cache(tmp_path, monkeypatch, synth_roots):
    monkeypatch.setenv("LPR_BENCH_SYNTH_KNOBS", json.dumps({"noise_std": 2.0}))
    import datasets.synthetic  # noqa: F401  (registers)

    splits = DATASETS.get("lpr4m-synth")(None, size="tiny", seed=0, cache_dir=tmp_path)
    assert splits.name == "lpr4m-synth" and splits.layout == "lpr4m-release" and len(splits.queries) == 20
    (cached,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert cached.name.startswith("lpr4m-release-tiny-0-") and manifest(cached)["knobs"]["noise_std"] == 2.0
    monkeypatch.setenv("LPR_BENCH_SYNTH_LAYOUT", "lpr750k")
    assert DATASETS.get("lpr4m-synth")(None, size="tiny", seed=0, cache_dir=tmp_path).layout == "lpr750k"
    monkeypatch.delenv("LPR_BENCH_SYNTH_KNOBS")
    mf = DATASETS.get("movingfashion-synth")(synth_roots["mf"], size="tiny", seed=0)  # an existing root is loaded as is
    assert mf.name == "movingfashion-synth" and len(mf.missing) == 2
