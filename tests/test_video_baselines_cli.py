"""The video baselines through the command line: tiny train (2 steps) + evaluate + submit.

timesformer and video-swin on ``lpr4m-synth``; seam-match-rcnn on ``lpr4m-synth`` and
``movingfashion-synth`` with its second stage (``--rerank all``), as its leaderboard rows use it.
Each run writes a submission that must validate and re-score to its own metrics.
"""

from __future__ import annotations

import pytest

from benchmark.cli.main import main
from benchmark.record import submission
from benchmark.record.rescore import rescore
from tests.evalkit import recall_at

pytestmark = pytest.mark.slow

RUNS = [
    ("timesformer", "lpr4m-synth", ()),
    ("video-swin", "lpr4m-synth", ()),
    ("seam-match-rcnn", "lpr4m-synth", ("--rerank", "all")),
    ("seam-match-rcnn", "movingfashion-synth", ("--rerank", "all")),
]


@pytest.mark.parametrize("method, dataset, extra", RUNS, ids=[f"{m}-{d}" for m, d, _ in RUNS])
def test_tiny_train_and_evaluate_through_the_cli(method, dataset, extra, tmp_path, request):
    splits = request.getfixturevalue("synth_lpr4m" if dataset == "lpr4m-synth" else "synth_movingfashion")
    out, res = tmp_path / "runs", tmp_path / "results"
    rc = main(
        [
            "--method",
            method,
            "--dataset",
            dataset,
            "--synth-size",
            "tiny",
            "--profile",
            "tiny",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--bootstrap",
            "20",
            "--output-dir",
            str(out),
            "--results-dir",
            str(res),
            "--no-leaderboard",
            *extra,
        ]
    )
    assert rc == 0
    label = f"{method}-train.batch_size-4"  # batch 4 is not the tiny profile's: it joins the label
    path = res / "submissions" / f"{dataset}__tiny__{label}{'__rerank-all' if extra else ''}__seed0.json"
    sub = submission.load_submission(path)  # schema + consistency
    assert sub["method"]["name"] == method and sub["dataset"]["name"] == dataset
    assert len(sub["rankings"]) == len(splits.queries)
    assert sub["protocol"]["rerank"] == ("all" if extra else "none")
    assert sub["provenance"]["training"]["steps"] == 2
    overall = sub["metrics"]["overall"]
    for k in (1, 5, 10):  # the claimed values are the saved rankings' own (not only within the scorer's tolerance)
        assert overall[f"R{k}"]["value"] == pytest.approx(recall_at(sub, splits, k), abs=1e-9)
    report = rescore(path, splits)  # the leaderboard trusts only re-scored rankings
    assert {"R1", "R5", "R10"} <= set(report.verified)
