"""Plugins: a method file outside the repository through the whole protocol, entry points,
duplicate names, did-you-mean, broken plugins."""

from __future__ import annotations

import shutil
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from benchmark.cli.main import main
from benchmark.core import registry
from benchmark.core.registry import METHODS, RegistryError
from benchmark.record import submission
from benchmark.record.rescore import rescore

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "examples" / "plugin_template.py"


pytestmark = pytest.mark.usefixtures("isolated_registry")  # conftest: registrations are forgotten


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("outside_repo")
    assert REPO not in d.resolve().parents
    return d


@pytest.mark.slow
def test_plugin_outside_the_repo_runs_the_whole_protocol(outside, tmp_path, synth_lpr4m, capsys):
    plugin = outside / "my_method.py"
    shutil.copy(TEMPLATE, plugin)
    res = tmp_path / "results"
    rc = main(
        [
            "--plugin",
            str(plugin),
            "--method",
            "example-convpool",
            "--dataset",
            "lpr4m-synth",
            "--synth-size",
            "tiny",
            "--profile",
            "tiny",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--num-workers",
            "0",
            "--bootstrap",
            "20",
            "--set",
            "width=8",
            "--output-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(res),
        ]
    )
    assert rc == 0
    # --set width=8 is not the template's default, nor batch 8 the profile's: the run is labelled
    # by both, beside the default's
    path = res / "submissions" / "lpr4m-synth__tiny__example-convpool-width-8+train.batch_size-8__seed0.json"
    sub = submission.load_submission(path)
    assert sub["method"]["config"]["width"] == 8 and sub["method"]["variant"] == "width-8+train.batch_size-8"
    assert sub["provenance"]["training"]["steps"] == 2
    assert rescore(path, synth_lpr4m).verified
    assert "example-convpool (width-8+train.batch_size-8)" in (res / "leaderboard.md").read_text()
    assert (
        tmp_path / "runs" / "lpr4m-synth" / "example-convpool-width-8+train.batch_size-8" / "tiny-seed0" / "last.pt"
    ).is_file()


def test_plugin_is_listed(outside, capsys):
    plugin = outside / "listed.py"
    shutil.copy(TEMPLATE, plugin)
    assert main(["list", "--plugin", str(plugin)]) == 0
    out = capsys.readouterr().out
    assert "example-convpool" in out and "plugin template: small CNN" in out


def test_entry_point_methods_are_loaded(outside, monkeypatch):
    (outside / "lpr_ep_fake_pkg.py").write_text(
        textwrap.dedent("""
        from benchmark.core.registry import METHODS
        from methods.base import Method

        @METHODS.register("ep-fake-method", description="advertised by an installed distribution")
        class EpFake(Method):
            pass
    """)
    )
    monkeypatch.syspath_prepend(str(outside))
    eps = [metadata.EntryPoint(name="ep-fake-method", value="lpr_ep_fake_pkg", group=registry.ENTRY_POINT_GROUP)]
    seen_groups = []

    def fake_entry_points(*, group):
        seen_groups.append(group)
        return eps if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry.metadata, "entry_points", fake_entry_points)
    assert registry.load_entry_points() == ["ep-fake-method"]
    assert seen_groups == ["lpr_benchmark.methods"]
    entry = METHODS.entry("ep-fake-method")
    assert entry.obj.__name__ == "EpFake" and entry.description == "advertised by an installed distribution"


def test_entry_point_of_an_installed_distribution(outside, monkeypatch):
    """No monkeypatching of importlib: a real ``*.dist-info`` with ``entry_points.txt`` on sys.path."""
    (outside / "lpr_ep_real_pkg.py").write_text(
        textwrap.dedent('''
        from benchmark.core.registry import METHODS
        from methods.base import Method

        @METHODS.register("ep-real-method")
        class EpReal(Method):
            """Registered through a distribution's entry point."""
    ''')
    )
    info = outside / "lpr_ep_real_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lpr-ep-real-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lpr_benchmark.methods]\nep-real-method = lpr_ep_real_pkg\n")
    monkeypatch.syspath_prepend(str(outside))
    assert "ep-real-method" in registry.load_entry_points()
    assert METHODS.entry("ep-real-method").description == "Registered through a distribution's entry point."


def test_duplicate_method_name_is_rejected(outside, capsys):
    clash = outside / "clash.py"
    clash.write_text(
        textwrap.dedent('''
        from benchmark.core.registry import METHODS
        from methods.base import Method

        @METHODS.register("clip-meanpool")
        class Impostor(Method):
            """Another clip-meanpool."""
    ''')
    )
    rc = main(["list", "--plugin", str(clash)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "duplicate method name 'clip-meanpool'" in err
    assert "methods.clip_meanpool.ClipMeanPool" in err and "Impostor" in err and "Traceback" not in err
    with pytest.raises(RegistryError, match="duplicate method name"):
        METHODS.add("clip-meanpool", object())


def test_did_you_mean(capsys):
    with pytest.raises(RegistryError, match=r"Did you mean 'clip-meanpool'\?"):
        METHODS.get("clip-meanpol")
    assert main(["--method", "clipmeanpool", "--dataset", "lpr4m-synth"]) == 2
    assert "Did you mean 'clip-meanpool'" in capsys.readouterr().err
    assert main(["--method", "clip-meanpool", "--dataset", "lpr4m-synht"]) == 2
    assert "unknown dataset 'lpr4m-synht'. Did you mean 'lpr4m-synth'" in capsys.readouterr().err


def test_broken_or_missing_plugin_is_one_clear_line(outside, capsys):
    broken = outside / "broken.py"
    broken.write_text("def oops(:\n")
    assert main(["list", "--plugin", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --plugin {broken}: cannot be imported (SyntaxError") and "Traceback" not in err
    assert main(["list", "--plugin", str(outside / "nope.py")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["list", "--plugin", "no_such_module_xyz"]) == 2
    assert "ModuleNotFoundError" in capsys.readouterr().err
