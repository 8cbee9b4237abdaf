"""requirements.lock pins, with hashes, every package the harness and its tests import.

``make venv`` installs the lock with ``pip install --require-hashes``, so two fresh clones a
month apart get the same open_clip, timm and numpy; these checks keep the lock in step with
``pyproject.toml`` and with the code's imports (a new import or a changed pin without
``make lock`` fails here, not in a fresh clone).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
LOCAL = {"benchmark", "methods", "datasets", "tests", "examples", "run_benchmark"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(text: str) -> dict[str, list[str]]:
    """``{name: [hash, ...]}`` of each ``name==version`` requirement and its ``--hash`` lines."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            current = f"{normalise(match.group(1))}=={match.group(2)}"
            entries[current] = []
        elif current and line.strip().startswith("--hash=sha256:"):
            entries[current].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif line.strip() and not line.startswith(" "):
            current = None
    return entries


def pyproject_pins() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in ("dev", "prepare"):
        specs += project["optional-dependencies"][extra]
    pins = set()
    for spec in specs:
        match = PIN.match(spec)
        assert match, f"pyproject.toml: {spec!r} is not pinned with =="
        pins.add(f"{normalise(match.group(1))}=={match.group(2)}")
    return pins


def third_party_imports() -> dict[str, str]:
    """Top-level modules imported anywhere in the code and tests (function-local and optional
    imports included) that are neither the standard library nor this project: module -> file."""
    found: dict[str, str] = {}
    files = [REPO / "run_benchmark.py", *(p for top in LOCAL - {"run_benchmark"} for p in (REPO / top).rglob("*.py"))]
    siblings = {p.stem for p in files}  # scripts that import a module beside them (tests/benchmarks)
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names | LOCAL | siblings | {"__future__"}:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_requirement_is_pinned_with_hashes():
    entries = lock_entries(LOCK.read_text())
    assert len(entries) > 100  # the whole tree: torch's CUDA wheels, open_clip's, img2dataset's ...
    unhashed = [name for name, hashes in entries.items() if not hashes]
    assert unhashed == []
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for hashes in entries.values() for h in hashes)


def test_the_lock_holds_pyprojects_pins():
    entries = lock_entries(LOCK.read_text())
    missing = sorted(pyproject_pins() - set(entries))
    assert missing == [], f"pinned in pyproject.toml but not in requirements.lock (run `make lock`): {missing}"


def test_every_imported_package_is_in_the_lock():
    locked = {name.split("==")[0] for name in lock_entries(LOCK.read_text())}
    dists = metadata.packages_distributions()
    faults = []
    for module, where in sorted(third_party_imports().items()):
        names = {normalise(d) for d in dists.get(module, [])}
        if not names or not names & locked:
            faults.append(f"{module} (imported in {where}; distributions {sorted(names) or 'none installed'})")
    assert faults == [], f"imports the lock does not pin: {faults}"


def test_the_makefile_installs_the_lock_with_hashes():
    make = (REPO / "Makefile").read_text()
    assert "pip install -q --require-hashes -r $(LOCK)" in make and "LOCK := requirements.lock" in make
    assert "--no-deps" in make  # the project itself, without re-resolving its dependencies


def test_the_checks_catch_an_unhashed_or_missing_pin():
    text = "numpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\ntimm==1.0.31\n    # via y\n"
    entries = lock_entries(text)
    assert entries == {"numpy==2.4.6": ["a" * 64], "timm==1.0.31": []}
    assert "numpy==2.4.5" not in entries
