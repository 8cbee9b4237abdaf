"""RICE end to end through the command line on lpr4m-synth (tiny): train 3 steps, evaluate
with PMD re-ranking over every pair of each livestream's gallery, submit; then render the
attention overlays from the run's checkpoint with ``visualize``."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from benchmark import submission
from benchmark.cli import main

pytestmark = pytest.mark.slow

LABEL = "rice-icl+pmd+pfr+ipd+text"


@pytest.fixture(scope="module")
def rice_run(tmp_path_factory, synth_lpr4m):
    base = tmp_path_factory.mktemp("rice-e2e")
    out, res = base / "runs", base / "results"
    rc = main([
        "--method", "rice", "--dataset", "lpr4m-synth", "--profile", "tiny", "--synth-size", "tiny",
        "--max-steps", "3", "--batch-size", "8", "--num-workers", "0", "--bootstrap", "20", "--rerank", "all",
        "--output-dir", str(out), "--results-dir", str(res), "--no-leaderboard",
    ])
    assert rc == 0
    return out / "lpr4m-synth" / LABEL / "tiny-seed0", res


def test_cli_trains_reranks_and_submits(rice_run, synth_lpr4m):
    run_dir, res = rice_run
    assert (run_dir / "last.pt").is_file() and (run_dir / "config.json").is_file()
    path = res / "submissions" / f"lpr4m-synth__tiny__{LABEL}__rerank-all__seed0.json"  # re-ranked: its own file
    sub = submission.load_submission(path)
    assert sub["method"]["name"].startswith("rice") and len(sub["rankings"]) == len(synth_lpr4m.queries)
    r1 = sub["metrics"]["overall"]["R1"]["value"]
    assert math.isfinite(r1) and 0.0 <= r1 <= 100.0
    assert {"R1", "R5", "R10"} <= set(submission.rescore(path, synth_lpr4m).verified)


def test_visualize_writes_overlays_from_the_checkpoint(rice_run, synth_lpr4m, tmp_path, capsys):
    run_dir, _ = rice_run
    query = next(q for q in synth_lpr4m.queries if not q.missing)
    out = tmp_path / "vis"
    rc = main(["visualize", "--method", "rice", "--dataset", "lpr4m-synth", "--checkpoint", str(run_dir / "last.pt"),
               "--query", query.query_id, "--out", str(out)])
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert any(p.name.endswith("_attention.png") for p in pngs)
    assert len([p for p in pngs if "_frame" in p.name]) >= 1
    with Image.open(next(p for p in pngs if p.name.endswith("_attention.png"))) as img:
        assert img.format == "PNG" and img.width > img.height
    # a query that is not in the test split is one error line, not a trace
    assert main(["visualize", "--method", "rice", "--dataset", "lpr4m-synth", "--checkpoint", str(run_dir / "last.pt"),
                 "--query", "nope", "--out", str(out)]) == 1
    assert "not in" in capsys.readouterr().err
    # a method without attention maps is refused
    assert main(["visualize", "--method", "clip-meanpool", "--dataset", "lpr4m-synth", "--checkpoint",
                 str(run_dir / "last.pt"), "--query", query.query_id, "--out", str(out)]) == 1
