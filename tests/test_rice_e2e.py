"""RICE end to end through the command line on lpr4m-synth (tiny): train 3 steps, evaluate
with PMD re-ranking over every pair of each livestream's gallery, submit; then render the
attention overlays from the run's checkpoint with ``visualize``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from benchmark.cli.main import main
from benchmark.record import submission
from benchmark.record.rescore import rescore
from tests.evalkit import recall_at

pytestmark = pytest.mark.slow

LABEL = "rice-icl+pmd+pfr-ln+ipd+text+train.batch_size-8"  # --batch-size 8: not the profile's
SYNTH_TINY = ("--dataset", "lpr4m-synth", "--profile", "tiny", "--synth-size", "tiny")  # every run here


def _visualize(method: str, checkpoint: Path, query: str, out: Path) -> int:
    return main(
        ["visualize", "--method", method, "--dataset", "lpr4m-synth", "--checkpoint", str(checkpoint)]
        + ["--query", query, "--out", str(out)]
    )


@pytest.fixture(scope="module")
def rice_run(tmp_path_factory, synth_lpr4m):
    base = tmp_path_factory.mktemp("rice-e2e")
    out, res = base / "runs", base / "results"
    rc = main(
        [
            "--method",
            "rice",
            *SYNTH_TINY,
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--num-workers",
            "0",
            "--bootstrap",
            "20",
            "--rerank",
            "all",
            "--output-dir",
            str(out),
            "--results-dir",
            str(res),
            "--no-leaderboard",
        ]
    )
    assert rc == 0
    return out / "lpr4m-synth" / LABEL / "tiny-seed0", res


def test_cli_trains_reranks_and_submits(rice_run, synth_lpr4m):
    run_dir, res = rice_run
    assert (run_dir / "last.pt").is_file() and (run_dir / "config.json").is_file()
    path = res / "submissions" / f"lpr4m-synth__tiny__{LABEL}__rerank-all__seed0.json"  # re-ranked: its own file
    sub = submission.load_submission(path)
    assert sub["method"]["name"].startswith("rice") and len(sub["rankings"]) == len(synth_lpr4m.queries)
    for k in (1, 5, 10):  # the claimed values are the saved (re-ranked) rankings' own
        assert sub["metrics"]["overall"][f"R{k}"]["value"] == pytest.approx(recall_at(sub, synth_lpr4m, k), abs=1e-9)
    assert sub["protocol"]["pairs_scored"] > 0  # the second stage ran
    assert {"R1", "R5", "R10"} <= set(rescore(path, synth_lpr4m).verified)


def test_visualize_writes_overlays_from_the_checkpoint(rice_run, synth_lpr4m, tmp_path, capsys):
    run_dir, _ = rice_run
    query = next(q for q in synth_lpr4m.queries if not q.missing)
    out = tmp_path / "vis"
    rc = _visualize("rice", run_dir / "last.pt", query.query_id, out)
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert any(p.name.endswith("_attention.png") for p in pngs)
    assert len([p for p in pngs if "_frame" in p.name]) >= 1
    with Image.open(next(p for p in pngs if p.name.endswith("_attention.png"))) as img:
        assert img.format == "PNG" and img.width > img.height
    # a query that is not in the test split is one error line, not a trace
    assert _visualize("rice", run_dir / "last.pt", "nope", out) == 1
    assert "not in" in capsys.readouterr().err
    # a method without attention maps is refused
    assert _visualize("clip-meanpool", run_dir / "last.pt", query.query_id, out) == 1


def test_weights_reevaluate_a_checkpoint_under_another_config(rice_run, synth_lpr4m, tmp_path, capsys):
    """``--weights CKPT --epochs 0``: the same settings reproduce the run's rankings exactly from
    a fresh output folder; ``--set ipd=oracle`` evaluates the same weights with ground-truth
    boxes, leaving the detector unused, in a submission of its own that names its source."""
    run_dir, res = rice_run
    ckpt = run_dir / "last.pt"
    common = [
        "--method",
        "rice",
        *SYNTH_TINY,
        "--weights",
        str(ckpt),
        "--epochs",
        "0",
        "--num-workers",
        "0",
        "--bootstrap",
        "20",
        "--results-dir",
        str(tmp_path / "res"),
        "--no-leaderboard",
    ]
    assert main(common + ["--rerank", "all", "--output-dir", str(tmp_path / "a")]) == 0
    (same,) = (tmp_path / "res" / "submissions").glob("*__rerank-all__weights-*__seed0.json")
    original = submission.load_submission(res / "submissions" / f"lpr4m-synth__tiny__{LABEL}__rerank-all__seed0.json")
    again = submission.load_submission(same)
    assert again["rankings"] == original["rankings"]
    weights = again["provenance"]["initial_weights"]
    assert weights["source"] == LABEL and weights["unused_keys"] == 0 and same.name.count(weights["sha256"][:8]) == 1

    assert main(common + ["--set", "ipd=oracle", "--output-dir", str(tmp_path / "b")]) == 0
    cap = capsys.readouterr()
    out = "".join((cap.out + cap.err).split())  # the console wraps long lines
    assert "checkpointtensorsunusedbythisconfig,e.g.detector." in out
    (oracle,) = (tmp_path / "res" / "submissions").glob("*ipd-oracle*__weights-*__seed0.json")
    sub = submission.load_submission(oracle)
    assert sub["method"]["variant"] == "icl+pmd+pfr-ln+ipd-oracle+text"
    assert sub["provenance"]["initial_weights"]["unused_keys"] > 0 and "training" not in sub["provenance"]
    assert (tmp_path / "b" / "lpr4m-synth" / "rice-icl+pmd+pfr-ln+ipd-oracle+text").is_dir()

    from benchmark.reports.leaderboard import _stage

    assert _stage(sub["protocol"], sub["provenance"]) == f"weights of {LABEL}"


def test_weights_that_do_not_fit_are_one_line(rice_run, tmp_path, capsys):
    run_dir, _ = rice_run
    base = [
        *SYNTH_TINY,
        "--epochs",
        "0",
        "--num-workers",
        "0",
        "--output-dir",
        str(tmp_path / "o"),
        "--results-dir",
        str(tmp_path / "r"),
        "--no-leaderboard",
        "--weights",
        str(run_dir / "last.pt"),
    ]
    assert main(["--method", "mgh"] + base) != 0  # clip-meanpool would fit: RICE holds its encoder
    err = capsys.readouterr().err
    assert "last.pt: its weights do not fit this model: missing" in err and "Traceback" not in err
    assert main(["--method", "rice", "--resume"] + base) != 0
    assert "--weights and --resume" in capsys.readouterr().err
    assert not (tmp_path / "r" / "submissions").exists() or not list((tmp_path / "r" / "submissions").iterdir())
