"""Provenance of a run: code version, package versions, device, Python; no host names.

Recorded in every submission so that a leaderboard row can be traced to the code and the
software that produced it. Nothing identifying the machine or user (host name, user name,
absolute home paths) is collected.

A run from a working tree with uncommitted changes ("dirty") cannot be reproduced from its
commit alone, so :func:`git_info` then also records the change: the SHA-256 and size of
``git diff HEAD`` over tracked files (``results/`` excluded), the diff's text up to
:data:`DIFF_CAP` bytes (``diff_truncated`` when cut), and the SHA-256 of each untracked,
non-ignored file (new modules are not in the diff).

The environment is recorded as the versions of the main packages and, by :func:`lock_info`, the
SHA-256 of the committed lock file (``requirements.lock``, every package pinned with hashes, which
``make venv`` installs), so that a row's environment can be rebuilt from the repository.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import torch

from benchmark.core.digest import sha256_file
from benchmark.core.paths import REPO_ROOT

PACKAGES = (
    "lpr-bench",
    "torch",
    "torchvision",
    "open_clip_torch",
    "timm",
    "numpy",
    "pillow",
    "decord",
    "av",
    "scipy",
    "scikit-learn",
    "jsonschema",
    "rich",
    "tabulate",
)


# what the harness writes into the tree itself: a run that adds a submission while another
# trains must not mark that one's code as modified
OUTPUT_PATHS = ("results",)
DIFF_CAP = 256 * 1024  # bytes of diff text kept in a submission
MAX_UNTRACKED = 200  # untracked files hashed at most
LOCK_FILE = "requirements.lock"  # pip-compile --generate-hashes output, installed by `make venv`


def _git(repo: Path, *args: str) -> Optional[bytes]:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_info(repo: Path = REPO_ROOT, *, diff_cap: int = DIFF_CAP) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the working tree at ``repo``;
    dirty = a tracked file outside :data:`OUTPUT_PATHS` differs from the commit. A dirty tree
    adds :func:`diff_record`."""
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    excluded = [f":(exclude){p}" for p in OUTPUT_PATHS]
    status = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    info: dict[str, Any] = {
        "commit": commit.decode().strip(),
        "dirty": None if status is None else bool(status.strip()),
    }
    if info["dirty"]:
        info.update(diff_record(repo, diff_cap=diff_cap))
    return info


def diff_record(repo: Path = REPO_ROOT, *, diff_cap: int = DIFF_CAP) -> dict[str, Any]:
    """The uncommitted change of ``repo``: ``diff_sha256``, ``diff_bytes``, ``diff`` (text, cut at
    ``diff_cap`` bytes on a line end), ``diff_truncated`` and ``untracked`` ({path: sha256});
    ``{}`` when git cannot tell."""
    excluded = [f":(exclude){p}" for p in OUTPUT_PATHS]
    diff = _git(repo, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--", ".", *excluded)
    if diff is None:
        return {}
    text = diff[:diff_cap]
    if len(diff) > diff_cap:
        text = text[: text.rfind(b"\n") + 1]
    out: dict[str, Any] = {
        "diff_sha256": hashlib.sha256(diff).hexdigest(),
        "diff_bytes": len(diff),
        "diff": text.decode("utf-8", errors="replace"),
        "diff_truncated": len(diff) > diff_cap,
    }
    listing = _git(repo, "ls-files", "--others", "--exclude-standard", "-z", "--", ".", *excluded)
    untracked: dict[str, str] = {}
    for name in sorted(n for n in (listing or b"").decode("utf-8", errors="replace").split("\0") if n)[:MAX_UNTRACKED]:
        try:
            untracked[name] = hashlib.sha256((repo / name).read_bytes()).hexdigest()
        except OSError:
            continue
    out["untracked"] = untracked
    return out


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def lock_info(repo: Path = REPO_ROOT, name: str = LOCK_FILE) -> Optional[dict[str, str]]:
    """``{"file": name, "sha256": ...}`` of the lock file at the root of ``repo`` (as it is on
    disk: a locally edited lock shows a hash that differs from the commit's); None without one."""
    path = repo / name
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return {"file": name, "sha256": digest}


def device_string(device: torch.device | str) -> str:
    """E.g. ``cuda: NVIDIA H100 80GB HBM3 x1`` or ``cpu: x86_64, 2 threads``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        idx = device.index or 0
        return f"cuda: {torch.cuda.get_device_name(idx)} x{torch.cuda.device_count()} (CUDA {torch.version.cuda})"
    return f"cpu: {platform.machine() or 'unknown'}, {torch.get_num_threads()} threads"


def collect(device: torch.device | str, *, world_size: int = 1) -> dict[str, Any]:
    """Everything above as one JSON-ready dict."""
    return {
        "git": git_info(),
        "packages": package_versions(),
        "lock": lock_info(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": device_string(device),
        "world_size": int(world_size),
        "command": command_line(),
    }


def command_line(argv: Optional[list[str]] = None, home: Optional[str] = None) -> Optional[str]:
    """The ``run_benchmark.py`` (or ``lpr-bench``) command line this process runs, shell-quoted,
    with the home folder written ``~`` (no user name in a shared file); None when the run was
    started some other way (a test, a notebook, ``benchmark.cli.runner.run`` from Python)."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name not in ("run_benchmark.py", "lpr-bench"):
        return None
    home = str(Path.home()) if home is None else home
    args = [a.replace(home, "~") if home not in ("", "/") else a for a in argv[1:]]
    # "~/x" stays unquoted so that a shell expands it when the line is pasted back
    return " ".join(
        ["run_benchmark.py", *("~/" + shlex.quote(a[2:]) if a.startswith("~/") else shlex.quote(a) for a in args)]
    )


def config_files(method_config: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Files a method config names, whatever the field is called (``pretrained``, a plugin's
    ``ckpt``, at any depth): ``{dotted field: {"path", "sha256", "bytes"}}`` for every string
    value that is an existing regular file when the run starts. Weights a run loads from a file
    were made outside the harness; their digest says which ones (the path alone does not)."""
    out: dict[str, dict[str, Any]] = {}
    if isinstance(method_config, dict):
        for key, value in method_config.items():
            out.update(config_files(value, f"{prefix}{key}."))
    elif isinstance(method_config, str) and method_config and len(method_config) < 4096:
        path = Path(method_config).expanduser()
        try:
            is_file = path.is_file()
        except OSError:  # a name too long for the file system, a value that is no path at all
            is_file = False
        if is_file:
            home = str(Path.home())
            shown = method_config.replace(home, "~", 1) if home not in ("", "/") else method_config  # no user name
            out[prefix.rstrip(".")] = {"path": shown, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out
