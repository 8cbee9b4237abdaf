"""Mistakes in a command line are caught before any data is loaded or generated, each with one
``error:`` line that suggests the closest valid value (issue 32, item 7).

Every case runs with ``LPR_BENCH_CACHE`` pointing at an empty folder and checks that the folder
is still empty afterwards: the error came before a synthetic set was generated."""

from __future__ import annotations

import pytest

from benchmark.cli.main import main

RUN = ["--profile", "tiny", "--epochs", "0", "--no-leaderboard"]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("LPR_BENCH_CACHE", str(cache))
    return cache


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--method", "rice", "--dataset", "lpr4m-synth", "--set", "ipd=orcale"],
            "override ipd='orcale': expected one of none, single, multi, oracle; did you mean 'oracle'?",
        ),
        (["--method", "rice", "--dataset", "lpr4m-synth", "--set", "pfr_target=layernrm"], "did you mean 'layernorm'?"),
        (
            ["--method", "rice", "--dataset", "lpr4m-synth", "--set", "ipdd=none"],
            "override 'ipdd': unknown field 'ipdd'; did you mean 'ipd'?",
        ),
        (["--method", "clip-meanpool", "--dataset", "LPR4M"], "unknown dataset 'LPR4M'. Did you mean 'lpr4m'?"),
        (["--method", "RICE", "--dataset", "lpr4m-synth"], "unknown method 'RICE'. Did you mean 'rice'?"),
    ],
)
def test_a_run_mistake_is_one_line_with_a_suggestion_before_any_data(argv, expected, empty_cache, tmp_path, capsys):
    code = main([*argv, *RUN, "--output-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")])
    assert code == 2
    assert expected in _error(capsys)
    assert not any(empty_cache.iterdir()), "data was generated before the mistake was reported"


def test_an_unknown_field_far_from_every_name_lists_the_fields(empty_cache, capsys):
    code = main(["--method", "clip-meanpool", "--dataset", "lpr4m-synth", *RUN, "--set", "zzzz=1"])
    assert code == 2
    line = _error(capsys)
    assert "unknown field 'zzzz'; fields are [" in line and "'encoder'" in line


@pytest.mark.parametrize(
    "pair, expected",
    [
        ("lpr4=/nonexistent", "unknown dataset 'lpr4'. Did you mean 'lpr4m'"),
        ("lpr4m=/nonexistent", "--data-root lpr4m=/nonexistent: no such folder"),
    ],
)
def test_leaderboard_data_root_mistakes_are_refused(pair, expected, empty_cache, tmp_path, capsys):
    code = main(["leaderboard", "--results-dir", str(tmp_path / "res"), "--data-root", pair])
    assert code == 2
    assert expected in _error(capsys)
    assert not (tmp_path / "res").exists()
