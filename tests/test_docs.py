"""Every file, link, heading anchor and module the README and docs/ cite exists in the repository.

A manual that names a file the repository lacks (the README once cited "DESIGN's 15-minute
budget", a file no clone has) or a module that moved (``benchmark.evaluate`` before the
by-role layout) sends a reader nowhere; these checks read the Markdown, not the code, so they
cost no imports.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# the folders and files a clone has at its root; a cited path starting elsewhere (runs/, .cache/,
# /data/..., another project's util/utils.py) is an output, an example or someone else's file
TOP = {
    "benchmark",
    "methods",
    "datasets",
    "tests",
    "docs",
    "examples",
    "results",
    ".ci",
    "README.md",
    "Makefile",
    "pyproject.toml",
    "requirements.lock",
    "run_benchmark.py",
    "tools",
}
PACKAGES = ("benchmark", "methods", "datasets")
# paths that another change adds (named here so that the README can point at them already)
PENDING = {"docs/external.md"}

CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
TOKEN_END = ",.;:)'\""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(h) for h in HEADING.findall(text)}


def cited_paths(text: str) -> set[str]:
    """Repository paths in code spans and fenced blocks: tokens whose first part is at the root."""
    found: set[str] = set()
    for chunk in CODE_SPAN.findall(text) + FENCE.findall(text):
        for token in chunk.split():
            token = token.strip(TOKEN_END).split("::")[0]
            if any(c in token for c in "<>*{}$=") or "..." in token or token.startswith(("-", "http")):
                continue
            if token.split("/")[0] in TOP and (token in TOP or "/" in token):
                found.add(token.rstrip("/"))
            elif "/" not in token and token.endswith(".md"):  # a bare document name: at the root or in docs/
                found.add(token)
    return found


def exists(path: str) -> bool:
    return (REPO / path).exists() or ("/" not in path and (REPO / "docs" / path).exists())


def cited_modules(text: str) -> set[str]:
    """Dotted names of this project's modules in code spans (``benchmark.core.config``)."""
    names = set()
    for chunk in CODE_SPAN.findall(text):
        token = chunk.strip().split("(")[0].strip(TOKEN_END)
        if re.fullmatch(r"(%s)(\.\w+)+" % "|".join(PACKAGES), token):
            names.add(token)
    return names


def module_fault(name: str) -> str | None:
    """None when ``name`` is a module, or a module's top-level class/function/constant."""
    parts = name.split(".")
    here = REPO / parts[0]
    i = 1
    while i < len(parts) and ((here / parts[i]).is_dir() or (here / f"{parts[i]}.py").is_file()):
        here = here / parts[i]
        i += 1
    if i == len(parts):
        return None
    if i == 1:
        return f"{name}: no module {parts[0]}.{parts[1]}"
    source = here / "__init__.py" if here.is_dir() else here.with_suffix(".py")
    defined = re.compile(rf"^(class|def)\s+{re.escape(parts[i])}\b|^{re.escape(parts[i])}\s*[:=]", re.M)
    if not source.is_file() or not defined.search(source.read_text()):
        return f"{name}: {parts[i]} is not defined at the top of {source.relative_to(REPO)}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_cited_files_exist(doc: Path) -> None:
    missing = sorted(p for p in cited_paths(doc.read_text()) if p not in PENDING and not exists(p))
    assert missing == [], f"{doc.relative_to(REPO)} cites files the repository lacks: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_anchors_resolve(doc: Path) -> None:
    faults = []
    for target in LINK.findall(FENCE.sub("", doc.read_text())):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        if rel in PENDING:
            continue
        if not path.exists():
            faults.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            faults.append(f"{target}: no heading with that anchor in {rel}")
    assert faults == [], f"{doc.relative_to(REPO)}: {faults}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_cited_modules_exist(doc: Path) -> None:
    faults = [f for f in map(module_fault, sorted(cited_modules(doc.read_text()))) if f]
    assert faults == [], f"{doc.relative_to(REPO)}: {faults}"


def test_no_file_cites_a_design_document_the_repository_lacks() -> None:
    """Docstrings and comments cite docs/*.md and datasets/LAYOUT.md; each must exist."""
    cite = re.compile(r"\b((?:docs|datasets|results)/[\w./-]+\.md)\b")
    faults = []
    for py in sorted(p for top in (*PACKAGES, "tests", "examples") for p in (REPO / top).rglob("*.py")):
        if py == Path(__file__).resolve():  # this file's own examples of a bad citation
            continue
        for path in cite.findall(py.read_text()):
            if path not in PENDING and not (REPO / path).exists():
                faults.append(f"{py.relative_to(REPO)}: {path}")
    assert faults == []


def test_the_checks_catch_what_they_are_for(tmp_path) -> None:
    """The extractors find a missing file, a stale module and a bad anchor (so a pass means something)."""
    text = (
        "See `DESIGN.md` and `docs/nowhere.md`, `benchmark.evaluate`, `methods.base.NoSuchThing`,\n"
        "`methods.base.Method`, `benchmark.core.config`, `runs/x/last.pt`, `util/utils.py`.\n"
    )
    paths = cited_paths(text)
    assert not exists("DESIGN.md") and "DESIGN.md" in paths and exists("baselines.md")
    assert "docs/nowhere.md" in paths and "runs/x/last.pt" not in paths and "util/utils.py" not in paths
    faults = {m: module_fault(m) for m in cited_modules(text)}
    assert faults["benchmark.evaluate"] and faults["methods.base.NoSuchThing"]
    assert faults["methods.base.Method"] is None and faults["benchmark.core.config"] is None
    assert slug("Measured: `prepare` on the synthetic release") == "measured-prepare-on-the-synthetic-release"
    assert slug("RICE against the baselines (synthetic sets)") == "rice-against-the-baselines-synthetic-sets"
