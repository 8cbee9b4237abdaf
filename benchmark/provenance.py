"""Provenance of a run: code version, package versions, device, Python; no host names.

Recorded in every submission so that a leaderboard row can be traced to the code and the
software that produced it. Nothing identifying the machine or user (host name, user name,
absolute home paths) is collected.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

PACKAGES = (
    "lpr-bench", "torch", "torchvision", "open_clip_torch", "timm", "numpy", "pillow",
    "decord", "av", "scipy", "scikit-learn", "jsonschema", "rich", "tabulate",
)


# what the harness writes into the tree itself: a run that adds a submission while another
# trains must not mark that one's code as modified
OUTPUT_PATHS = ("results",)


def git_info(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the working tree at ``repo``;
    dirty = a tracked file outside :data:`OUTPUT_PATHS` differs from the commit."""

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":(exclude){p}" for p in OUTPUT_PATHS))
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": device_string(device),
        "world_size": int(world_size),
    }
