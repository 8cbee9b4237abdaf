"""The prepared GPU script (tests/benchmarks/bench_gpu_step.py) runs on the CPU at small shapes:
it builds the paper architecture, times the engine's steps and finds no host sync in them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent / "benchmarks" / "bench_gpu_step.py"


def test_the_gpu_step_script_runs_at_tiny_shapes_on_the_cpu(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu_step", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = mod.main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--boxed", "0.3", "--frames", "4"])
    finally:
        torch.set_num_threads(before)
    assert out["shapes"] == "tiny" and out["world_size"] == 1 and out["per_process_batch"] == 4
    assert out["pairs_per_s"] > 0 and out["step_s"] > 0 and out["forward_s"] > 0
    assert out["syncs_per_step"] == 0, out["sync_sites"]
    assert "pairs_per_s" in capsys.readouterr().out
