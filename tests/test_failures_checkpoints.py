"""Failure corpus, checkpoints: files that are not checkpoints, pickles that would run code, and a
loss that goes NaN. Each ends in one clear ``error:`` line naming the file and the fault, runs no
code from a file, and keeps the last good checkpoint."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.cli.main import main
from benchmark.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.scaleout_helpers import cli_stderr, run_args, run_dir, submission_path

pytestmark = pytest.mark.usefixtures("isolated_registry")


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: code execution, if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_files(tmp: Path, marker: Path) -> dict[str, Path]:
    files = {}
    files["text"] = tmp / "text.pt"
    files["text"].write_text("this is not a checkpoint\n")
    good = tmp / "good.pt"
    save_checkpoint(tmp / "goodrun", {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 0, "step": 0})
    shutil.copy(tmp / "goodrun" / "last.pt", good)
    files["truncated"] = tmp / "truncated.pt"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["plain state dict"] = tmp / "state_dict.pt"
    torch.save({"weight": torch.ones(2)}, files["plain state dict"])
    files["torch.save of a payload"] = tmp / "evil_zip.pt"
    torch.save({"format_version": 1, "model": _Payload(marker)}, files["torch.save of a payload"])
    for proto in (2, 4):
        files[f"raw pickle protocol {proto}"] = tmp / f"evil_raw{proto}.pt"
        files[f"raw pickle protocol {proto}"].write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=proto))
    return files


EXPECTED = {
    "text": "not a torch file (it starts with b'this'",
    "truncated": "not a readable torch file (PytorchStreamReader failed",
    "plain state dict": "not an LPR-Bench checkpoint (format_version 1 expected)",
    "torch.save of a payload": "refused: it holds pickled Python objects (Unsupported global: GLOBAL",
    "raw pickle protocol 2": "refused: it holds pickled Python objects (Unsupported global: GLOBAL",
    "raw pickle protocol 4": "refused: it holds pickled Python objects (Unsupported operand",
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_non_checkpoints_and_code_running_pickles_are_refused(tmp_path):
    marker = tmp_path / "CODE-RAN"
    for kind, path in _bad_files(tmp_path, marker).items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        msg = str(err.value)
        assert msg.startswith(str(path)) and EXPECTED[kind] in msg, (kind, msg)
        assert "\x1b[" not in msg and "\n" not in msg  # one plain line
    assert not marker.exists()


@pytest.mark.slow
def test_cli_resume_from_a_malicious_checkpoint_refuses_and_runs_nothing(tmp_path, synth_lpr4m, capsys):
    out, marker = tmp_path / "runs", tmp_path / "CODE-RAN"
    rdir = run_dir(out)
    rdir.mkdir(parents=True)
    torch.save({"format_version": 1, "model": _Payload(marker)}, rdir / "last.pt")
    assert main(run_args(out, tmp_path / "res", "--resume", steps=1)) == 1
    err = cli_stderr(capsys)
    assert f"error: {rdir / 'last.pt'}: not a loadable checkpoint: refused: it holds pickled Python objects" in err
    assert not marker.exists() and not submission_path(tmp_path / "res").exists()


@pytest.mark.slow
def test_cli_pretrained_weights_that_run_code_are_refused(tmp_path, synth_lpr4m, capsys):
    marker, weights = tmp_path / "CODE-RAN", tmp_path / "weights.pt"
    torch.save({"state_dict": _Payload(marker)}, weights)
    rc = main(run_args(tmp_path / "runs", tmp_path / "res", "--pretrained", str(weights), method="clip-meanpool"))
    assert rc == 1
    err = cli_stderr(capsys)
    assert f"error: encoder weights {weights}: not a loadable tensor checkpoint" in err
    assert not marker.exists()


@pytest.mark.slow
def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, synth_lpr4m, capsys):
    out = tmp_path / "runs"
    rc = main(run_args(out, tmp_path / "res", "--set", "nan_at_call=3", "--checkpoint-every", "1", steps=6))
    assert rc == 1
    ckpt = run_dir(out, sets=("nan_at_call=3",)) / "last.pt"  # the fault setting labels the run
    err = cli_stderr(capsys)
    assert "error: non-finite training loss at epoch 1, optimizer step 4 (icl=nan)" in err
    assert f"the last good checkpoint {ckpt} is kept" in err
    state = load_checkpoint(ckpt)
    assert (state["epoch"], state["step"]) == (0, 3)
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    assert not submission_path(tmp_path / "res", sets=("nan_at_call=3",)).exists()
