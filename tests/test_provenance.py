"""Provenance: git commit and dirty flag, package versions, device, nothing identifying the host."""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from benchmark.record import provenance

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_matches_head():
    info = provenance.git_info(REPO)
    assert info["commit"] == _git("rev-parse", "HEAD", cwd=REPO)
    assert isinstance(info["dirty"], bool)


def test_dirty_flag_follows_tracked_changes(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("one\n")
    _git("add", "a.txt", cwd=tmp_path)
    _git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "x", cwd=tmp_path)
    assert provenance.git_info(tmp_path) == {"commit": _git("rev-parse", "HEAD", cwd=tmp_path), "dirty": False}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    _git("add", "results/r.json", cwd=tmp_path)
    _git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "y", cwd=tmp_path)
    (tmp_path / "results" / "r.json").write_text('{"new": 1}\n')  # a run wrote a submission: not code
    assert provenance.git_info(tmp_path)["dirty"] is False
    (tmp_path / "a.txt").write_text("two\n")
    assert provenance.git_info(tmp_path)["dirty"] is True


def test_outside_a_repository_commit_is_none(tmp_path):
    assert provenance.git_info(tmp_path / "nowhere") == {"commit": None, "dirty": None}


def test_packages_device_and_no_host_identity():
    prov = provenance.collect("cpu")
    assert prov["packages"]["torch"] == metadata.version("torch")
    assert prov["packages"]["open_clip_torch"] == metadata.version("open_clip_torch")
    assert prov["device"] == f"cpu: {__import__('platform').machine()}, {torch.get_num_threads()} threads"
    assert prov["world_size"] == 1 and prov["python"].count(".") == 2
    text = json.dumps(prov)
    for secret in {socket.gethostname(), getpass.getuser(), str(Path.home())} - {"", "root", "/"}:
        assert secret not in text


def test_command_line_is_the_run_benchmark_invocation_quoted():
    from benchmark.record.provenance import command_line

    argv = ["/x/run_benchmark.py", "--method", "sgmn", "--set", "text=false", "--data-root", "/d/my data"]
    assert command_line(argv) == "run_benchmark.py --method sgmn --set text=false --data-root '/d/my data'"
    assert command_line(["/venv/bin/pytest", "-q"]) is None  # a run started from Python records none
    private = command_line(
        ["lpr-bench", "--data-root", "/home/alice/LPR4M", "--weights=/home/alice/r/last.pt"], home="/home/alice"
    )
    assert private == "run_benchmark.py --data-root ~/LPR4M '--weights=~/r/last.pt'" and "alice" not in private


def test_provenance_records_the_lock_files_sha256(tmp_path):
    import hashlib

    import jsonschema

    lock = REPO / "requirements.lock"
    assert lock.is_file(), "the committed lock file (make venv installs it)"
    expected = {"file": "requirements.lock", "sha256": hashlib.sha256(lock.read_bytes()).hexdigest()}
    assert provenance.lock_info(REPO) == expected
    prov = provenance.collect("cpu")
    assert prov["lock"] == provenance.lock_info()
    # the hash follows the content: an edited lock records another hash, no lock records None
    (tmp_path / "requirements.lock").write_text("numpy==2.4.6 --hash=sha256:00\n")
    assert provenance.lock_info(tmp_path)["sha256"] == hashlib.sha256(b"numpy==2.4.6 --hash=sha256:00\n").hexdigest()
    assert provenance.lock_info(tmp_path / "nowhere") is None
    schema = json.loads((REPO / "benchmark/record/schemas/submission-v2.json").read_text())
    lock_schema = schema["properties"]["provenance"]["properties"]["lock"]
    jsonschema.validate(prov["lock"], lock_schema)
    jsonschema.validate(None, lock_schema)
    try:
        jsonschema.validate({"file": "requirements.lock", "sha256": "not-a-hash"}, lock_schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a malformed lock hash validated")
