"""The command line: argument resolution, subcommands, and one-line errors with exit codes."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from benchmark.cli import args as cli
from benchmark.cli import commands as cli_commands
from benchmark.cli.main import build_parser, main
from benchmark.core.registry import load_all


@pytest.fixture(scope="module", autouse=True)
def registries():
    load_all()


def _run_args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "--method", "clip-meanpool", "--dataset", "lpr4m-synth", *extra])


def test_run_options_resolve_into_the_run_config(tmp_path):
    cfg = cli.resolve_run_config(
        _run_args(
            "--profile",
            "tiny",
            "--seed",
            "3",
            "--epochs",
            "2",
            "--max-steps",
            "7",
            "--batch-size",
            "16",
            "--grad-accum",
            "2",
            "--bootstrap",
            "10",
            "--set",
            "encoder.layers=2",
            "--pretrained",
            str(tmp_path / "w.pt"),
            "--output-dir",
            str(tmp_path / "o"),
            "--results-dir",
            str(tmp_path / "r"),
            "--synth-size",
            "tiny",
            "--resume",
            "--deterministic",
            "--device",
            "cpu",
        )
    )
    assert cfg.method == "clip-meanpool" and cfg.dataset == "lpr4m-synth" and cfg.seed == 3
    t = cfg.profile.train
    assert (t.epochs, t.max_steps, t.batch_size, t.grad_accum) == (2, 7, 16, 2)
    assert t.lr_encoder == 5e-4  # untouched fields keep the tiny profile's values
    assert cfg.profile.eval.bootstrap == 10 and cfg.profile.eval.rerank == "none"
    assert cfg.method_overrides == {"encoder.layers": "2", "encoder.pretrained": str(tmp_path / "w.pt")}
    assert cfg.resume and cfg.deterministic and cfg.device == "cpu" and cfg.synth_size == "tiny"
    assert cfg.output_dir == tmp_path / "o" and cfg.results_dir == tmp_path / "r"


def test_optimiser_options_override_the_profile():
    t = cli.resolve_run_config(
        _run_args("--lr-encoder", "2.5e-4", "--lr-new", "1e-3", "--weight-decay", "0", "--grad-clip", "0")
    ).profile.train
    assert (t.lr_encoder, t.lr_new, t.weight_decay, t.grad_clip) == (2.5e-4, 1e-3, 0.0, 0.0)
    assert cli.resolve_run_config(_run_args()).profile.train.grad_clip == 1.0  # the tiny profile's clip
    assert t.epochs == 4  # the rest stays the tiny profile's
    with pytest.raises(cli.UsageError, match="--lr-new must be >= 0"):
        cli.resolve_run_config(_run_args("--lr-new", "-1"))
    with pytest.raises(cli.UsageError, match="--lr-encoder must be >= 0"):
        cli.resolve_run_config(_run_args("--lr-encoder", "nan"))
    with pytest.raises(cli.UsageError, match="--grad-clip must be >= 0"):
        cli.resolve_run_config(_run_args("--grad-clip", "-1"))
    t = cli.resolve_run_config(_run_args("--group-batches", "livestream", "--group-size", "4")).profile.train
    assert (t.group_batches, t.group_size) == ("livestream", 4)
    assert cli.resolve_run_config(_run_args()).profile.train.group_batches == "none"
    with pytest.raises(cli.UsageError, match="--group-size must be positive"):
        cli.resolve_run_config(_run_args("--group-size", "0"))


def test_default_action_is_run_and_no_arguments_prints_help(capsys):
    assert main([]) == 2
    assert "subcommands: run (default)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "encoder.nope=1"], "unknown field 'nope'"),
        (["--set", "encoder.layers=two"], "encoder.layers='two': expected int"),
        (["--set", "layers"], "--set 'layers': expected KEY=VALUE"),
        (["--rerank", "topk"], "has no second stage"),
        (["--epochs", "-1"], "--epochs must be >= 0"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--rerank-topk", "0"], "--rerank-topk must be >= 1"),
    ],
)
def test_bad_run_options_are_usage_errors(extra, message, capsys):
    rc = main(["--method", "clip-meanpool", "--dataset", "lpr4m-synth", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("error: ") and "Traceback" not in err


def test_the_removed_nvjpeg_option_is_refused_not_ignored(monkeypatch, capsys):
    monkeypatch.setenv("LPR_BENCH_JPEG_DEVICE", "cuda")
    for argv in (["--method", "clip-meanpool", "--dataset", "lpr4m-synth"], ["visualize", "--help"], ["list"]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "LPR_BENCH_JPEG_DEVICE is no longer supported" in err


def test_real_dataset_without_data_root_is_one_line(tmp_path, capsys):
    rc = main(
        [
            "--method",
            "clip-meanpool",
            "--dataset",
            "lpr4m",
            "--output-dir",
            str(tmp_path),
            "--results-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == "error: dataset lpr4m needs --data-root pointing at an LPR4M or LPR750K download"


def test_missing_data_root_folder_names_it(tmp_path, capsys):
    rc = main(
        [
            "--method",
            "clip-meanpool",
            "--dataset",
            "movingfashion",
            "--data-root",
            str(tmp_path / "absent"),
            "--output-dir",
            str(tmp_path),
            "--results-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and str(tmp_path / "absent") in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    rc = main(["--method", "clip-meanpool", "--dataset", "lpr4m", "--device", "cuda", "--output-dir", str(tmp_path)])
    assert rc == 1 and "torch sees no CUDA device" in capsys.readouterr().err


def test_missing_pretrained_weights_is_one_line(tmp_path, synth_lpr4m, capsys):
    rc = main(
        [
            "--method",
            "clip-meanpool",
            "--dataset",
            "lpr4m-synth",
            "--synth-size",
            "tiny",
            "--pretrained",
            str(tmp_path / "missing.pt"),
            "--output-dir",
            str(tmp_path),
            "--results-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and f"encoder weights {tmp_path / 'missing.pt'}: no such file" in err


def test_method_refusing_its_config_is_one_line(tmp_path, synth_lpr4m, capsys):
    rc = main(
        [
            "--method",
            "clip-meanpool",
            "--dataset",
            "lpr4m-synth",
            "--synth-size",
            "tiny",
            "--set",
            "encoder.image_size=224",
            "--output-dir",
            str(tmp_path),
            "--results-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.strip() == (
        "error: cannot build method 'clip-meanpool' (profile tiny): clip-meanpool: the encoder is "
        "built for 224 px but the data profile crops 112 px; use the matching --profile"
    )


def test_list_shows_methods_datasets_profiles(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "Methods:",
        "Datasets:",
        "Profiles:",
        "clip-meanpool",
        "lpr4m-synth",
        "movingfashion",
        "tiny",
        "paper",
    ):
        assert word in out
    assert "CLIP4Clip meanP" in out


def test_check_data_ok_and_faulty(synth_lpr4m, tmp_path, capsys):
    assert main(["check-data", "--dataset", "lpr4m-synth", "--data-root", str(synth_lpr4m.root)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")
    broken = tmp_path / "broken"
    shutil.copytree(synth_lpr4m.root / "annotations", broken / "annotations")  # no frames, no images
    assert main(["check-data", "--dataset", "lpr4m", "--data-root", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "FAILED" in out
    assert main(["check-data", "--dataset", "nope", "--data-root", str(broken)]) == 2


def test_synth_rejects_unknown_knobs_and_sizes(tmp_path, capsys):
    assert main(["synth", "--layout", "lpr4m", "--out", str(tmp_path / "x"), "--set", "not_a_knob=1"]) == 2
    assert "unknown knob(s) not_a_knob" in capsys.readouterr().err
    assert main(["synth", "--layout", "lpr4m", "--out", str(tmp_path / "x"), "--size", "huge"]) == 2
    assert "unknown synthetic size 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_synth_writes_a_dataset_that_checks_clean(tmp_path, capsys):
    out = tmp_path / "mf"
    assert (
        main(
            [
                "synth",
                "--layout",
                "movingfashion",
                "--out",
                str(out),
                "--size",
                "tiny",
                "--seed",
                "1",
                "--set",
                "occlusion_rate=0.5",
            ]
        )
        == 0
    )
    assert (out / "train.json").is_file() and (out / "test.json").is_file()
    capsys.readouterr()
    assert main(["check-data", "--dataset", "movingfashion", "--data-root", str(out)]) == 0
    assert "missing_video" in capsys.readouterr().out  # the generator drops a few videos, as the real archive


def test_score_faults_are_one_line(tmp_path, capsys):
    assert main(["score", str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.json'}: no such file"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["score", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and "Traceback" not in err


def test_leaderboard_on_an_empty_results_dir(tmp_path, capsys):
    assert main(["leaderboard", "--results-dir", str(tmp_path)]) == 0
    assert "No submissions yet" in (tmp_path / "leaderboard.md").read_text()
    assert "no submissions yet" in capsys.readouterr().out


def test_visualize_is_delegated_or_reported(capsys, monkeypatch):
    """This checkout has benchmark/cli/visualize.py: ``visualize`` reaches its parser; a checkout
    without it (simulated) gets one line saying so."""
    assert cli_commands._visualize_module() is not None
    with pytest.raises(SystemExit) as exc:
        main(["visualize", "--help"])
    assert exc.value.code == 0
    assert "--method" in capsys.readouterr().out  # visualize's own arguments, not an empty parser
    monkeypatch.setattr(cli_commands, "_visualize_module", lambda: None)
    assert main(["visualize"]) == 1
    assert "benchmark/cli/visualize.py is missing" in capsys.readouterr().err


def test_demo_fallback_is_explicit(monkeypatch, capsys):
    from benchmark.core.registry import METHODS

    args = _run_args("--demo-fallback")
    args.method = "rice"
    if "rice" in METHODS:
        assert cli.resolve_run_config(args).method == "rice"
        monkeypatch.setattr(METHODS, "_entries", {k: v for k, v in METHODS._entries.items() if k != "rice"})
    cfg = cli.resolve_run_config(args)
    assert cfg.method == "clip-meanpool"
    assert "falls back to 'clip-meanpool'" in capsys.readouterr().err
    args.demo_fallback = False
    with pytest.raises(Exception, match="unknown method 'rice'"):
        cli.resolve_run_config(args)
