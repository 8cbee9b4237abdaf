"""Issue 22's "Why" cases through the command line: a user's experiment never corrupts the
record, and each mistake ends in one ``error:`` line.

Runs are tiny (``lpr4m-synth`` size tiny, ``--epochs 0`` or one or two steps). Plugin runs go
through a subprocess, as a user's would: a plugin file edited between two runs cannot be
re-imported into one process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli.main import main
from benchmark.record.submission import load_submission
from benchmark.reports import leaderboard as lb
from datasets.check import check_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "lpr4m-synth", "--synth-size", "tiny", "--profile", "tiny", "--bootstrap", "20"]

PLUGIN = """
from dataclasses import dataclass

import torch
from benchmark.core.registry import METHODS
from methods.base import Encoded
from methods.clip_meanpool import ClipMeanPool, ClipMeanPoolConfig
from methods.encoders import TINY_ENCODER

FLIP = {flip}  # edited between runs by the test


@dataclass(frozen=True)
class ProbeConfig(ClipMeanPoolConfig):
    fault: str = "none"  # "none" | "shape" | "nan"


@METHODS.register("{name}", description="test plugin")
class Probe(ClipMeanPool):
    Config = ProbeConfig
    PROFILES = {{"tiny": ProbeConfig(encoder=TINY_ENCODER), "paper": ProbeConfig()}}

    def encode_query(self, batch):
        emb = super().encode_query(batch).embedding
        if FLIP:
            emb = torch.cat([-emb[:, : emb.shape[1] // 2], emb[:, emb.shape[1] // 2 :]], dim=1)
        if self.cfg.fault == "shape":
            return Encoded(emb.unsqueeze(1).expand(-1, 2, -1))
        if self.cfg.fault == "nan":
            emb = emb.clone()
            emb[0] = float("nan")
        return Encoded(emb)
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "run_benchmark.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def _error_lines(stderr: str) -> list[str]:
    """The error lines of stderr (progress output aside): ``error:`` lines and any traceback."""
    return [
        ln
        for ln in stderr.splitlines()
        if ln.startswith(("error", "Traceback", "  File ", "During handling")) or "Error:" in ln
    ]


def _plugin(path: Path, name: str, flip: bool = False) -> Path:
    path.write_text(PLUGIN.format(name=name, flip=flip))
    return path


@pytest.fixture(scope="module")
def tiny_root(synth_lpr4m, tmp_path_factory) -> Path:
    """A private copy of the tiny lpr4m-synth root, to be damaged by the tests."""
    return Path(synth_lpr4m.root)


def _copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- 1. run identity -----------------------------------------------------------------------


def test_a_run_on_another_data_root_does_not_replace_the_submission(tiny_root, tmp_path):
    out, res = tmp_path / "runs", tmp_path / "results"
    common = [
        "--method",
        "clip-meanpool",
        *TINY,
        "--epochs",
        "0",
        "--num-workers",
        "0",
        "--output-dir",
        str(out),
        "--results-dir",
        str(res),
    ]
    assert main(common) == 0
    (path,) = (res / "submissions").glob("*.json*")
    before = path.read_bytes()
    other = _copy_root(tiny_root, tmp_path / "other-root")
    train = next((other / "annotations").glob("training_videoinfo_*.txt"))
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(lines[:-1]), encoding="utf-8")  # another dataset instance: other checksum
    proc = _cli(*common, "--data-root", str(other))
    errors = _error_lines(proc.stderr)
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith(f"error: {path}: not written over") and "annotation checksum" in errors[0]
    assert "--overwrite" in errors[0]
    assert path.read_bytes() == before  # the record is untouched
    proc = _cli(*common, "--data-root", str(other), "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        load_submission(path)["dataset"]["annotation_checksum"] != json.loads(before)["dataset"]["annotation_checksum"]
    )


def test_a_truncated_run_is_labelled_partial_and_not_ranked(synth_lpr4m, tmp_path):
    res = tmp_path / "results"
    assert (
        main(
            [
                "--method",
                "clip-meanpool",
                *TINY,
                "--max-steps",
                "1",
                "--batch-size",
                "8",
                "--num-workers",
                "0",
                "--output-dir",
                str(tmp_path / "runs"),
                "--results-dir",
                str(res),
            ]
        )
        == 0
    )
    (path,) = (res / "submissions").glob("*.json*")
    identity = load_submission(path)["provenance"]["identity"]
    assert identity["partial"] is True and identity["max_steps"] == 1 and identity["planned_steps"] > 1
    assert "methods/clip_meanpool.py" in identity["code"]["files"]
    board = lb.regenerate(res, load_splits=lambda ds: synth_lpr4m, plots=False, site=False)
    (row,) = [r for rows in board.tables.values() for r in rows]
    assert row.partial and row.analysis and "partial" in row.label


# --- 2. feature cache ------------------------------------------------------------------------


def test_an_edited_plugin_misses_the_feature_cache(synth_lpr4m, tmp_path):
    plugin = _plugin(tmp_path / "probe_plugin.py", "cache-probe", flip=False)
    out = tmp_path / "runs"  # one output dir: one feature cache for both runs

    def run(res: Path) -> list:
        proc = _cli(
            "--method",
            "cache-probe",
            "--plugin",
            str(plugin),
            *TINY,
            "--epochs",
            "0",
            "--num-workers",
            "0",
            "--output-dir",
            str(out),
            "--results-dir",
            str(res),
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        (path,) = (res / "submissions").glob("*.json*")
        return load_submission(path)["rankings"]

    first = run(tmp_path / "res1")
    assert list((out / "feature-cache").glob("*.pt"))  # the first run cached its features
    _plugin(plugin, "cache-probe", flip=True)  # same weights (seeded random start), other code
    second = run(tmp_path / "res2")
    assert second != first  # re-encoded with the edited code, not read back from the cache


# --- 6. one line per mistake ----------------------------------------------------------------


def test_a_corrupt_frame_in_a_dataloader_worker_is_the_same_one_line(synth_lpr4m, tiny_root, tmp_path):
    root = _copy_root(tiny_root, tmp_path / "root")
    from benchmark.core.registry import DATASETS

    query = DATASETS.get("lpr4m")(root).queries[0]
    for frame in query.clip.frame_paths:
        Path(frame).write_bytes(b"this is not a JPEG")
    lines = []
    for workers in ("2", "0"):
        proc = _cli(
            "--method",
            "clip-meanpool",
            "--dataset",
            "lpr4m-synth",
            "--data-root",
            str(root),
            "--epochs",
            "0",
            "--num-workers",
            workers,
            "--no-feature-cache",
            "--output-dir",
            str(tmp_path / f"runs{workers}"),
            "--results-dir",
            str(tmp_path / f"res{workers}"),
        )
        errors = _error_lines(proc.stderr)
        assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
        lines.append(re.sub(r"0x[0-9a-f]+", "0x…", errors[0]))  # PIL's message names an object address
    assert lines[0] == lines[1] and lines[0].startswith("error: ") and str(root / "frames") in lines[0]


@pytest.mark.parametrize(
    "fault, expected",
    [("shape", "encode_query returned an embedding of shape"), ("nan", "encode_query returned non-finite values")],
)
def test_a_plugin_breaking_the_method_contract_is_one_line_naming_it(synth_lpr4m, tmp_path, fault, expected):
    plugin = _plugin(tmp_path / "contract_plugin.py", "contract-probe")
    proc = _cli(
        "--method",
        "contract-probe",
        "--plugin",
        str(plugin),
        *TINY,
        "--epochs",
        "0",
        "--num-workers",
        "0",
        "--set",
        f"fault={fault}",
        "--output-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "res"),
    )
    errors = _error_lines(proc.stderr)
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith("error: method contract-probe (contract_plugin.py): ") and expected in errors[0]
    assert not (tmp_path / "res" / "submissions").exists()


def test_synth_onto_a_foreign_folder_is_one_line(tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("keep me")
    assert main(["synth", "--layout", "lpr4m", "--out", str(target), "--size", "tiny"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {target}: folder exists") and "--out" in err[0]
    assert (target / "thesis.tex").read_text() == "keep me" and len(list(target.iterdir())) == 1


def test_resume_without_a_checkpoint_is_refused(synth_lpr4m, tmp_path, capsys):
    out = tmp_path / "runs"
    rc = main(
        [
            "--method",
            "clip-meanpool",
            *TINY,
            "--max-steps",
            "1",
            "--batch-size",
            "8",
            "--num-workers",
            "0",
            "--resume",
            "--output-dir",
            str(out),
            "--results-dir",
            str(tmp_path / "res"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("error: --resume: no checkpoint to resume in ")
    assert not list(out.rglob("last.pt"))  # nothing was trained


def test_check_data_refuses_a_symlink_out_of_the_root_and_an_empty_training_file(tiny_root, tmp_path):
    root = _copy_root(tiny_root, tmp_path / "root")
    image = sorted((root / "images").iterdir())[0]
    outside = tmp_path / "elsewhere.jpg"
    shutil.move(image, outside)
    os.symlink(outside, image)
    report = check_dataset("lpr4m", root)
    assert not report.ok and report.counts.get("path_escape") == 1
    assert any(str(image) in ex and "outside the data root" in ex for ex in report.examples["path_escape"])

    empty = _copy_root(tiny_root, tmp_path / "empty")
    train = next((empty / "annotations").glob("training_videoinfo_*.txt"))
    train.write_text("")
    report = check_dataset("lpr4m", empty)
    assert not report.ok and report.counts.get("empty_split") == 1
    assert str(train) in report.examples["empty_split"][0]
