"""What code a method is made of: the source files of its classes and their sha256, the part of a
run's identity that changes when the method's code does (a plugin file included)."""

from __future__ import annotations

import hashlib
import inspect
import sys
import sysconfig
from pathlib import Path
from typing import Any

from torch import nn

from benchmark.core.paths import REPO_ROOT


def _installed_roots() -> list[Path]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return [Path(r).resolve() for r in roots if r]


def _is_installed(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def code_files(method: nn.Module) -> list[Path]:
    """Source files of the classes ``method`` is made of (its MRO and every submodule's class),
    leaving out the Python installation (torch, open_clip, ...): the repository's modules and
    plugin files, wherever they are."""
    roots = _installed_roots()
    classes: dict[type, None] = {}
    for module in method.modules():
        for cls in type(module).__mro__:
            classes.setdefault(cls, None)
    files: dict[Path, None] = {}
    for cls in classes:
        mod = sys.modules.get(cls.__module__)
        try:
            src = inspect.getsourcefile(mod) if mod is not None else None
        except TypeError:  # a built-in module
            src = None
        if not src:
            continue
        path = Path(src).resolve()
        if path.is_file() and not _is_installed(path, roots):
            files.setdefault(path, None)
    return sorted(files)


def _display_name(path: Path) -> str:
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return f"plugin:{path.name}"


def code_hash(method: nn.Module) -> dict[str, Any]:
    """``{"sha256": digest over every file, "files": {name: sha256}}`` of :func:`code_files`;
    names are repository-relative (``plugin:<file name>`` outside it: no absolute paths)."""
    files: dict[str, str] = {}
    whole = hashlib.sha256()
    for path in code_files(method):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        name = _display_name(path)
        files[name] = digest
        whole.update(name.encode("utf-8") + b"\0" + digest.encode("ascii") + b"\n")
    return {"sha256": whole.hexdigest(), "files": files}
