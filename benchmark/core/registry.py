"""Name -> object registries for methods and datasets (after fast-reid's Registry).

Methods and datasets register with a decorator::

    @METHODS.register("clip-meanpool", description="CLIP ViT, mean-pooled frames, InfoNCE")
    class ClipMeanPool(Method): ...

Built-in methods are discovered by importing every module of the ``methods`` package;
third-party ones through the ``lpr_benchmark.methods`` entry-point group or ``--plugin``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

ENTRY_POINT_GROUP = "lpr_benchmark.methods"


class RegistryError(KeyError):
    """An unknown or duplicate name; ``str()`` is the human message."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    description: str


class Registry:
    """A flat name -> object map with did-you-mean lookups and duplicate rejection."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, description: str = "") -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            self.add(name, obj, description=description)
            return obj

        return deco

    def add(self, name: str, obj: Any, *, description: str = "") -> None:
        if name in self._entries:
            prev = self._entries[name].obj
            if prev is obj or _same_definition(prev, obj):
                return  # the same module imported twice under one name
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: already registered by {_where(prev)}, again by {_where(obj)}"
            )
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, description)

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            folded = [k for k in self._entries if k.lower() == str(name).lower()]
            close = folded or difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Known: {known}.") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _same_definition(a: Any, b: Any) -> bool:
    return _where(a) == _where(b)


METHODS = Registry("method")
DATASETS = Registry("dataset")


def load_builtin_methods() -> None:
    """Import every module of the ``methods`` package so that its decorators run (by name: the
    core knows no method module, it discovers them)."""
    methods = importlib.import_module("methods")
    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"methods.{info.name}")


def load_builtin_datasets() -> None:
    """Import every module of the ``datasets`` package (by name, as the methods)."""
    datasets = importlib.import_module("datasets")
    for info in pkgutil.iter_modules(datasets.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"datasets.{info.name}")


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Load third-party methods advertised under ``group``; returns the loaded names."""
    loaded = []
    for ep in metadata.entry_points(group=group):
        ep.load()
        loaded.append(ep.name)
    return loaded


def load_plugin(spec: str) -> None:
    """Import a plugin given as a ``.py`` path, a package directory or a module name."""
    path = Path(spec)
    if path.suffix == ".py" or path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"plugin {spec}: no such file or directory")
        target = path / "__init__.py" if path.is_dir() else path
        mod_name = f"lpr_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(
            mod_name, target, submodule_search_locations=[str(path)] if path.is_dir() else None
        )
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"plugin {spec}: cannot be imported")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
    else:
        importlib.import_module(spec)


def load_all(plugins: list[str] | tuple[str, ...] = ()) -> None:
    """Built-ins, entry points, then explicit plugins."""
    load_builtin_datasets()
    load_builtin_methods()
    load_entry_points()
    for spec in plugins:
        load_plugin(spec)
