"""Failure corpus: what the harness does when files, data, disks or processes go wrong.

Every case must end in a clear message naming the file and the fault (through the command
line: one ``error:`` line, non-zero exit, no traceback), never run code from a file, never
leave a half-written file in place of a good one.

Disk faults are produced two ways. Always: by making the system calls fail the way the kernel
does (``ENOSPC`` half-way through writing the temporary file; ``EROFS`` at the rename).
Where this process may mount a file system (root with ``CAP_SYS_ADMIN``, as in the project's
container; skipped otherwise): for real, on a 64 KiB tmpfs in a private mount namespace,
filled to the last byte (``ENOSPC``) and then remounted read-only (``EROFS``). ``chmod 0o555``
is not used: tests run as root, for whom permission bits do not stop writes.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import textwrap
import tracemalloc
import zlib
from pathlib import Path

import pytest
import torch

from benchmark.cli.main import main
from benchmark.core import atomic, registry, safe_json
from benchmark.core.registry import METHODS
from benchmark.record.submission import SubmissionError, load_submission, write_submission
from benchmark.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.evalkit import make_submission
from tests.scaleout_helpers import PYTHON, REPO, run_args, run_dir, submission_path, subprocess_env


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    registry.load_builtin_methods()
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# --- files that are not checkpoints, and pickles that would run code -------------------------


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
    err = _err(capsys)
    assert f"error: {rdir / 'last.pt'}: not a loadable checkpoint: refused: it holds pickled Python objects" in err
    assert not marker.exists() and not submission_path(tmp_path / "res").exists()


@pytest.mark.slow
def test_cli_pretrained_weights_that_run_code_are_refused(tmp_path, synth_lpr4m, capsys):
    marker, weights = tmp_path / "CODE-RAN", tmp_path / "weights.pt"
    torch.save({"state_dict": _Payload(marker)}, weights)
    rc = main(run_args(tmp_path / "runs", tmp_path / "res", "--pretrained", str(weights), method="clip-meanpool"))
    assert rc == 1
    err = _err(capsys)
    assert f"error: encoder weights {weights}: not a loadable tensor checkpoint" in err
    assert not marker.exists()


# --- a loss that goes NaN -------------------------------------------------------------------


@pytest.mark.slow
def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, synth_lpr4m, capsys):
    out = tmp_path / "runs"
    rc = main(run_args(out, tmp_path / "res", "--set", "nan_at_call=3", "--checkpoint-every", "1", steps=6))
    assert rc == 1
    ckpt = run_dir(out, sets=("nan_at_call=3",)) / "last.pt"  # the fault setting labels the run
    err = _err(capsys)
    assert "error: non-finite training loss at epoch 1, optimizer step 4 (icl=nan)" in err
    assert f"the last good checkpoint {ckpt} is kept" in err
    state = load_checkpoint(ckpt)
    assert (state["epoch"], state["step"]) == (0, 3)
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    assert not submission_path(tmp_path / "res", sets=("nan_at_call=3",)).exists()


# --- a full disk, a read-only results folder -------------------------------------------------


class _DiskFillsUp:
    """``os.fdopen`` whose file accepts half of what is written, then fails with ENOSPC."""

    def __init__(self, real_fdopen) -> None:
        self.real = real_fdopen
        self.partial: list[Path] = []

    def __call__(self, fd, mode="r", *a, **k):
        fh = self.real(fd, mode, *a, **k)
        outer = self

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()
                return False

            def fileno(self):
                return fh.fileno()

            def write(self, data):
                fh.write(data[: len(data) // 2])
                fh.flush()
                outer.partial.append(Path(os.readlink(f"/proc/self/fd/{fh.fileno()}")))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def flush(self):
                fh.flush()

        return Full()


def test_disk_full_mid_write_keeps_the_previous_submission(tmp_path, monkeypatch, synth_lpr4m):
    sub = make_submission(synth_lpr4m, bootstrap=20)
    path = write_submission(sub, tmp_path)
    before = path.read_bytes()
    full = _DiskFillsUp(os.fdopen)
    monkeypatch.setattr(atomic.os, "fdopen", full)
    changed = dict(sub, method=dict(sub["method"], num_parameters=999))
    with pytest.raises(atomic.WriteError) as err:
        write_submission(changed, tmp_path)
    monkeypatch.undo()
    assert str(err.value) == f"cannot write {path}: No space left on device"
    assert full.partial and not full.partial[0].exists()  # the half-written temporary is gone
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_read_only_results_folder_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    res = tmp_path / "results"
    res.mkdir()
    (res / "leaderboard.md").write_text("OLD LEADERBOARD\n")

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(atomic.os, "replace", read_only)
    assert main(["leaderboard", "--results-dir", str(res)]) == 1
    err = _err(capsys)
    assert f"error: cannot write {res}" in err and "Read-only file system" in err
    assert (res / "leaderboard.md").read_text() == "OLD LEADERBOARD\n"
    assert not [p for p in res.rglob("*") if p.name.endswith(".tmp")]


_REAL_FS_SCRIPT = textwrap.dedent(r"""
    import contextlib, io, json, os, subprocess, sys
    mnt = sys.argv[1]
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], capture_output=True).returncode:
        print(json.dumps({"skip": "cannot mount a tmpfs here"})); sys.exit(0)
    from benchmark.cli.main import main
    res = os.path.join(mnt, "results")
    os.makedirs(res)
    with open(os.path.join(res, "leaderboard.md"), "w") as fh:
        fh.write("OLD LEADERBOARD\n")
    out = {}
    filler = os.path.join(mnt, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the file system to the last byte
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as exc:
        out["fill_errno"] = exc.errno
    os.close(fd)
    def run():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["leaderboard", "--results-dir", res])
        return {"rc": rc, "err": err.getvalue(), "board": open(os.path.join(res, "leaderboard.md")).read(),
                "files": sorted(os.listdir(res))}
    out["enospc"] = run()
    os.unlink(filler)
    subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
    out["erofs"] = run()
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_real_full_and_read_only_file_systems(tmp_path):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", PYTHON, "-c", _REAL_FS_SCRIPT, str(mnt)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode and "unshare failed" in proc.stderr:
        pytest.skip(f"no private mount namespace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["fill_errno"] == errno.ENOSPC
    for case, message in (("enospc", "No space left on device"), ("erofs", "Read-only file system")):
        r = out[case]
        assert r["rc"] == 1, (case, r)
        assert r["err"].startswith("error: cannot write ") and message in r["err"], (case, r["err"])
        assert "Traceback" not in r["err"]
        assert r["board"] == "OLD LEADERBOARD\n", case  # the previous file, whole
        assert r["files"] == ["leaderboard.md"], (case, r["files"])  # no temporary left behind


# --- submissions that must not score --------------------------------------------------------


@pytest.fixture(scope="module")
def good_submission(tmp_path_factory, synth_lpr4m) -> Path:
    """A valid submission on lpr4m-synth (tiny, seed 0): random embeddings, real ground truth."""
    sub = make_submission(synth_lpr4m, bootstrap=20, dataset_size="tiny", dataset_seed=0)
    assert sub["dataset"]["name"] == "lpr4m-synth"
    return write_submission(sub, tmp_path_factory.mktemp("good"))


def _tamper(good: Path, dest: Path, edit) -> Path:
    obj = json.loads(good.read_text())
    edit(obj)
    dest.write_text(json.dumps(obj, allow_nan=True))
    return dest


def _present(obj) -> int:
    return next(i for i, (_, ids) in enumerate(obj["rankings"]) if len(ids) >= 2)


FAULTS = {
    "NaN metric": (
        lambda o: o["metrics"]["overall"]["R1"].update(value=float("nan")),
        "NaN is not allowed (metrics must be finite numbers)",
    ),
    "infinite metric": (lambda o: o["metrics"]["overall"]["R5"].update(value=float("inf")), "Infinity is not allowed"),
    "negative metric": (
        lambda o: o["metrics"]["overall"]["R5"].update(value=-3.0),
        "metrics/overall/R5/value: -3.0 is less than the minimum of 0",
    ),
    "metric over 100": (
        lambda o: o["metrics"]["overall"]["R10"].update(value=100.01),
        "metrics/overall/R10/value: 100.01 is greater than the maximum of 100",
    ),
    "duplicate query id": (lambda o: o["rankings"].__setitem__(1, list(o["rankings"][0])), "duplicate query id"),
    "unknown query id": (lambda o: o["rankings"][0].__setitem__(0, "no-such-clip"), "unknown query id 'no-such-clip'"),
    "unknown gallery id": (
        lambda o: o["rankings"][_present(o)][1].__setitem__(0, "no-such-image"),
        "unknown gallery id 'no-such-image'",
    ),
    "duplicate gallery id": (
        lambda o: o["rankings"][_present(o)][1].__setitem__(1, o["rankings"][_present(o)][1][0]),
        "listed twice",
    ),
}


def test_score_accepts_the_untampered_submission(good_submission, capsys):
    assert main(["score", str(good_submission)]) == 0
    assert ": OK - toy-method" in capsys.readouterr().out


@pytest.mark.parametrize("fault", list(FAULTS))
def test_score_rejects_a_faulty_submission_naming_the_fault(good_submission, tmp_path, capsys, fault):
    edit, message = FAULTS[fault]
    path = _tamper(good_submission, tmp_path / "bad.json", edit)
    assert main(["score", str(path)]) == 1
    err = _err(capsys)
    assert err.startswith(f"error: {path}") and message in err, err


def test_gigantic_submission_is_refused_before_reading(tmp_path, capsys):
    big = tmp_path / "huge.json"
    with open(big, "wb") as fh:  # sparse: 300 MiB on paper, nothing on disk
        fh.truncate(300 * 2**20)
    tracemalloc.start()
    try:
        assert main(["score", str(big)]) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{300 * 2**20} bytes, more than the limit of {safe_json.MAX_BYTES}" in _err(capsys)
    assert peak < 16 * 2**20  # nothing of the file was read


def _gzip_bomb(path: Path, size: int, lie_about_size: bool = False) -> Path:
    """``size`` bytes of spaces inside ``[...]``, gzip-compressed in 1 MiB pieces (a few KiB per MiB)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    with open(path, "wb") as fh:
        fh.write(comp.compress(b"["))
        block = b" " * 2**20
        for _ in range(size // 2**20):
            fh.write(comp.compress(block))
        fh.write(comp.compress(b"]"))
        fh.write(comp.flush())
    if lie_about_size:  # a crafted trailer: ISIZE (last 4 bytes) claims 10 bytes
        with open(path, "r+b") as fh:
            fh.seek(-4, 2)
            fh.write((10).to_bytes(4, "little"))
    return path


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path, capsys):
    bomb = _gzip_bomb(tmp_path / "bomb.json.gz", 300 * 2**20)
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        assert main(["score", str(bomb)]) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"decompresses to more than the limit of {safe_json.MAX_BYTES} bytes" in _err(capsys)
    assert peak < 16 * 2**20


def test_gzip_bomb_with_a_lying_trailer_costs_at_most_the_limit(tmp_path):
    bomb = _gzip_bomb(tmp_path / "liar.json.gz", 64 * 2**20, lie_about_size=True)
    limit = 4 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(SubmissionError, match=f"decompresses to more than the limit of {limit} bytes"):
            load_submission(bomb, max_bytes=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit + 8 * 2**20  # the limit plus a decompression chunk or two, not 64 MiB


def test_deeply_nested_submission_is_refused(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert main(["score", str(deep)]) == 1
    assert f"JSON nested 200001 deep, more than the limit of {safe_json.MAX_DEPTH}" in _err(capsys)


# --- a crash in the middle of writing the leaderboard ------------------------------------------

_CRASH_SCRIPT = textwrap.dedent(r"""
    import os, signal, sys
    from benchmark.core import atomic
    real = os.fdopen
    def dying_fdopen(fd, *a, **k):
        fh = real(fd, *a, **k)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "leaderboard.md" not in name:
            return fh
        class Dying:
            def __enter__(self): return self
            def __exit__(self, *exc): fh.close()
            def fileno(self): return fh.fileno()
            def flush(self): fh.flush()
            def write(self, data):
                fh.write(data[: len(data) // 2]); fh.flush(); os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)  # the machine dies half-way through the file
        return Dying()
    atomic.os.fdopen = dying_fdopen
    from benchmark.cli.main import main
    sys.exit(main(["leaderboard", "--results-dir", sys.argv[1]]))
""")


@pytest.mark.slow
def test_crash_mid_leaderboard_write_leaves_the_old_leaderboard_whole(tmp_path, good_submission, capsys):
    res = tmp_path / "results"
    (res / "submissions").mkdir(parents=True)
    shutil.copy(good_submission, res / "submissions" / good_submission.name)
    assert main(["leaderboard", "--results-dir", str(res)]) == 0
    old = (res / "leaderboard.md").read_bytes()
    assert b"toy-method" in old
    # a second submission: the regenerated file would differ from the old one
    second = json.loads(good_submission.read_text())
    second["method"]["name"] = "toy-method-two"
    write_submission(second, res)
    proc = subprocess.run(
        [PYTHON, "-c", _CRASH_SCRIPT, str(res)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (res / "leaderboard.md").read_bytes() == old  # whole, and the old one
    stale = [p for p in res.iterdir() if p.name.startswith(".leaderboard.md.") and p.name.endswith(".tmp")]
    assert len(stale) == 1 and 0 < stale[0].stat().st_size < len(old) + 200  # the half-written temporary
    # the next regeneration is unaffected by the leftover and writes the new table
    capsys.readouterr()
    assert main(["leaderboard", "--results-dir", str(res)]) == 0
    assert b"toy-method-two" in (res / "leaderboard.md").read_bytes()
