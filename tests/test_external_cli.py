"""``evaluate`` and ``export`` through the command line on lpr4m-synth (tiny): the worked example's
script (examples/external_embeddings.py) run as a user would, its embeddings scored into an
external row; a run file; TREC files read back by ranx; weights from outside labelled as such."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli.main import main
from benchmark.record import submission
from benchmark.record.rescore import rescore

REPO = Path(__file__).resolve().parents[1]
NAME = "lpr4m-synth__tiny__tiny-cnn__external__seed0.json"


def _evaluate(res: Path, *inputs: str, name: str = "tiny-cnn", extra: tuple = ()) -> list[str]:
    return [
        "evaluate",
        "--dataset",
        "lpr4m-synth",
        "--synth-size",
        "tiny",
        *inputs,
        "--method-name",
        name,
        "--paper",
        "https://example.org/tiny-cnn",
        "--recipe",
        "a tiny CNN, 2 Adam steps (tests)",
        "--results-dir",
        str(res),
        *extra,
    ]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def example(tmp_path_factory, synth_lpr4m):
    """The worked example's script, run as docs/external.md runs it (tiny set, 2 steps)."""
    out = tmp_path_factory.mktemp("example")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "external_embeddings.py"),
            "--dataset",
            "lpr4m-synth",
            "--synth-size",
            "tiny",
            "--steps",
            "2",
            "--batch",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout
    return out / "query.npz", out / "gallery.npz"


def test_the_example_scores_into_an_external_row_that_is_never_overwritten(example, tmp_path, capsys, synth_lpr4m):
    q, g = example
    res = tmp_path / "results"
    inputs = ("--query-embeddings", str(q), "--gallery-embeddings", str(g))
    assert main(_evaluate(res, *inputs)) == 0
    path = res / "submissions" / NAME
    sub = submission.load_submission(path)
    ext = sub["provenance"]["external"]
    assert sub["source"] == "external" and sub["schema_version"] == 3 and "git" not in sub["provenance"]
    assert ext["kind"] == "embeddings" and ext["paper"] == "https://example.org/tiny-cnn"
    assert ext["inputs"] == {
        "query_embeddings": {"file": "query.npz", "sha256": _sha(q), "bytes": q.stat().st_size},
        "gallery_embeddings": {"file": "gallery.npz", "sha256": _sha(g), "bytes": g.stat().st_size},
    }
    report = rescore(path, synth_lpr4m)  # re-scored like every row: the claims hold
    assert "R1" in report.verified and submission.submission_start(sub) is None
    board = (res / "leaderboard.md").read_text()
    ranked = board.split("## lpr4m-synth")[1].split("**Ranked (one row per method")[1].split("**")[1]
    assert "| tiny-cnn (external) " in ranked
    assert "external: embeddings made outside the harness (https://example.org/tiny-cnn)" in board
    before = path.read_bytes()
    capsys.readouterr()
    assert main(_evaluate(res, *inputs)) == 0  # the same files again: nothing to write
    assert "already there, made from the same input files" in capsys.readouterr().out
    other = tmp_path / "g2.npz"
    data = np.load(g)
    np.savez(other, ids=data["ids"], embeddings=data["embeddings"][::-1])
    assert main(_evaluate(res, "--query-embeddings", str(q), "--gallery-embeddings", str(other))) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not written over, it was made from other input files" in err
    assert path.read_bytes() == before
    assert main(["score", str(path)]) == 0 and "OK - tiny-cnn" in capsys.readouterr().out
    assert main(["reproduce", str(path)]) == 1
    assert "an external submission (its model ran outside the harness)" in capsys.readouterr().err


def test_a_bad_file_is_one_line_and_nothing_is_written(example, tmp_path, capsys):
    q, g = example
    data = np.load(q)
    emb = data["embeddings"].copy()
    emb[2, 0] = np.nan
    bad = tmp_path / "q.npz"
    np.savez(bad, ids=data["ids"], embeddings=emb)
    res = tmp_path / "results"
    assert main(_evaluate(res, "--query-embeddings", str(bad), "--gallery-embeddings", str(g))) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0 and err.startswith(f"error: {bad}: non-finite value") and repr(str(data["ids"][2])) in err
    )
    assert not res.exists()


@pytest.mark.parametrize(
    "change,needle",
    [
        (("--run", "x.run"), "give either --query-embeddings and --gallery-embeddings, or --run"),
        (("--method-name", "my model"), "--method-name 'my model'"),
        (("--paper", "my thesis"), "give a link to the paper or code"),
    ],
)
def test_usage_mistakes_are_one_line_with_status_2(example, tmp_path, capsys, change, needle):
    q, g = example
    args = _evaluate(tmp_path, "--query-embeddings", str(q), "--gallery-embeddings", str(g))
    if change[0] in args:
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += list(change)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err


def test_a_run_file_scores_exports_and_reads_back_in_ranx(example, tmp_path, capsys, synth_lpr4m):
    ranx = pytest.importorskip("ranx")
    q, g = example
    qd, gd = np.load(q), np.load(g)
    group = {x.image_id: x.group for x in synth_lpr4m.gallery}
    qgroup = {x.query_id: x.group for x in synth_lpr4m.queries}
    scores = qd["embeddings"] @ gd["embeddings"].T
    lines = [
        f"{qid} Q0 {gid} 1 {float(scores[i, j])!r} mine"
        for i, qid in enumerate(qd["ids"][1:], 1)
        for j, gid in enumerate(gd["ids"])
        if group[str(gid)] == qgroup[str(qid)]
    ]
    run = tmp_path / "mine.run"
    run.write_text("\n".join(lines) + "\n")
    res = tmp_path / "results"
    assert main(_evaluate(res, "--run", str(run), name="tiny-cnn-run", extra=("--no-leaderboard",))) == 0
    err = capsys.readouterr().err
    assert f"notice: {run}: 1 of the" in err and f"(first {str(qd['ids'][0])!r}): each counted as a miss" in err
    path = res / "submissions" / "lpr4m-synth__tiny__tiny-cnn-run__external__seed0.json"
    sub = submission.load_submission(path)
    assert sub["provenance"]["external"]["inputs"]["run"]["sha256"] == _sha(run)
    assert sub["rankings"][[r[0] for r in sub["rankings"]].index(str(qd["ids"][0]))][1] == []
    out = tmp_path / "trec"
    assert main(["export", str(path), "--out", str(out)]) == 0
    qrels_file = next(out.glob("*.qrels"))
    run_file = out / "lpr4m-synth__tiny__tiny-cnn-run__external__seed0.run"
    first = run_file.read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[4] == str(sub["protocol"]["topk_saved"])
    assert all(
        len(ln.split()) == 4 and ln.split()[1] == "0" and ln.split()[3] == "1"
        for ln in qrels_file.read_text().splitlines()
    )
    got = ranx.evaluate(
        ranx.Qrels.from_file(str(qrels_file), kind="trec"),
        ranx.Run.from_file(str(run_file), kind="trec"),
        ["hit_rate@1", "hit_rate@10", "map@50"],
        make_comparable=True,
    )
    ov = sub["metrics"]["overall"]
    assert (
        abs(100 * got["hit_rate@1"] - ov["R1"]["value"]) < 1e-9
        and abs(100 * got["hit_rate@10"] - ov["R10"]["value"]) < 1e-9
    )
    assert abs(100 * got["map@50"] - ov["mAP@50"]["value"]) < 1e-9


PLUGIN = """
from dataclasses import dataclass
from typing import Optional

import torch

from benchmark.core.registry import METHODS
from examples.plugin_template import ConvPool, ConvPoolConfig


@dataclass(frozen=True)
class CkptConfig(ConvPoolConfig):
    ckpt: Optional[str] = None  # weights trained elsewhere: a field name the harness knows nothing of


@METHODS.register("ckpt-convpool", description="test: ConvPool that loads cfg.ckpt")
class CkptConvPool(ConvPool):
    Config = CkptConfig
    PROFILES = {"tiny": CkptConfig(width=4, embed_dim=8), "paper": CkptConfig()}

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        if cfg.ckpt:
            self.load_state_dict(torch.load(cfg.ckpt, weights_only=True), strict=False)
"""


def test_weights_from_outside_make_an_external_weights_row_whatever_the_field(tmp_path, synth_lpr4m):
    import torch

    from benchmark.reports import leaderboard as lb
    from benchmark.reports.leaderboard_tables import flags

    plugin = tmp_path / "ckpt_plugin.py"
    plugin.write_text(PLUGIN)
    ckpt = tmp_path / "mine.pt"
    torch.manual_seed(1)
    torch.save({"proj.weight": torch.randn(8, 16), "proj.bias": torch.zeros(8)}, ckpt)
    res = tmp_path / "results"
    args = [
        "--plugin",
        str(plugin),
        "--method",
        "ckpt-convpool",
        "--dataset",
        "lpr4m-synth",
        "--synth-size",
        "tiny",
        "--epochs",
        "0",
        "--num-workers",
        "0",
        "--bootstrap",
        "20",
        "--no-feature-cache",
        "--output-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(res),
        "--set",
        f"ckpt={ckpt}",
    ]
    # in a process of its own: a plugin registers its methods (and the template's) for the whole process
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_benchmark.py"), *args], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    [path] = (res / "submissions").glob("*.json*")
    assert path.name.endswith("__external-weights__seed0.json")
    sub = submission.load_submission(path)
    assert sub["provenance"]["weights_files"]["ckpt"]["sha256"] == _sha(ckpt)
    assert submission.submission_start(sub) == "external-weights" and not lb.is_analysis(sub)
    board = lb.build(lb.collect_rows(res, load_splits=lambda ds: synth_lpr4m))
    [row] = [r for rows in board.tables.values() for r in rows]
    assert row.stage.startswith("external-weights") and "external weights: evaluated without training" in row.note
    assert flags(row) == []  # a trained row: not an untrained control, not analysis
    # the --set field makes it a variant of the plugin (the one-row-per-method board lists it with the
    # method's variants); with nothing else to rank for the method, its label still says external-weights
    assert row.variant.startswith("set-") and row.label.endswith(", external-weights")


def test_untrained_zero_shot_and_external_weights_mean_what_they_say(tmp_path):
    from benchmark.record.provenance import config_files
    from benchmark.record.submission import starting_point

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    cfg = {"encoder": {"pretrained": str(weights)}, "layers": 2}
    files = config_files(cfg)
    assert files == {"encoder.pretrained": {"path": str(weights), "sha256": _sha(weights), "bytes": 7}}
    assert starting_point(False, False, cfg, files=bool(files)) == "external-weights"
    hub = {"encoder": {"pretrained": "openai"}}  # published weights by name: zero-shot
    assert config_files(hub) == {} and starting_point(False, False, hub) == "zero-shot"
    assert starting_point(False, False, {"encoder": {"pretrained": None}}) == "untrained"
    assert starting_point(True, False, cfg, files=True) is None  # trained by the harness from them: a trained row
    assert json.dumps(files)  # JSON-ready for the provenance
