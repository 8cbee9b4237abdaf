"""Failure corpus, writes: a full disk, a read-only results folder, a crash in the middle of writing
the leaderboard. None leaves a half-written file in place of a good one; the command line ends in
one ``error:`` line.

Disk faults are produced two ways. Always: by making the system calls fail the way the kernel
does (``ENOSPC`` half-way through writing the temporary file; ``EROFS`` at the rename).
Where this process may mount a file system (root with ``CAP_SYS_ADMIN``, as in the project's
container; skipped otherwise): for real, on a 64 KiB tmpfs in a private mount namespace,
filled to the last byte (``ENOSPC``) and then remounted read-only (``EROFS``). ``chmod 0o555``
is not used: tests run as root, for whom permission bits do not stop writes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from benchmark.cli.main import main
from benchmark.core import atomic
from benchmark.record.submission import write_submission
from tests.evalkit import make_submission
from tests.scaleout_helpers import PYTHON, REPO, cli_stderr, subprocess_env

pytestmark = pytest.mark.usefixtures("isolated_registry")


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
    err = cli_stderr(capsys)
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
