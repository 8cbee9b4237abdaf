"""The training engine: schedule, batching, accumulation, checkpoints, resume, NaN stop, DDP."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from benchmark.core.config import TrainConfig
from benchmark.training import checkpoint as ckpt
from benchmark.training import engine
from benchmark.training.distributed import DistEnv
from tests.toy_methods import RegressionData, SimulatedCrash, ToyConfig, ToyRegression, params_of

CFG = TrainConfig(
    epochs=2,
    batch_size=8,
    lr_encoder=1e-2,
    lr_new=5e-2,
    weight_decay=0.01,
    warmup_ratio=0.25,
    grad_clip=100.0,
    amp=False,
)


def _train(
    tmp: Path,
    cfg: TrainConfig = CFG,
    *,
    seed: int = 0,
    resume: bool = False,
    toy: ToyConfig = ToyConfig(),
    n: int = 32,
    method: ToyRegression | None = None,
    **kw,
):
    torch.manual_seed(123)
    m = method or ToyRegression(toy)
    res = engine.train(
        m, RegressionData(n), cfg, env=DistEnv(), run_dir=tmp, seed=seed, resume=resume, show_progress=False, **kw
    )
    return m, res


def test_warmup_cosine_schedule_values():
    f = engine.warmup_cosine(4, 20)
    assert f(0) == pytest.approx(1 / 5)
    assert f(3) == pytest.approx(4 / 5)
    assert f(4) == pytest.approx(1.0)
    assert f(12) == pytest.approx(0.5)  # half-way through the cosine part
    assert f(20) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def test_per_process_batch_splits_the_global_batch():
    assert engine.per_process_batch(32, 2, 2) == 8
    assert engine.per_process_batch(32, 1, 1) == 32
    with pytest.raises(engine.TrainingError, match="multiple of 4"):
        engine.per_process_batch(30, 2, 2)


def test_training_reduces_loss_and_uses_two_learning_rates(tmp_path):
    cfg = dataclasses.replace(CFG, epochs=8, warmup_ratio=0.0)
    torch.manual_seed(123)
    m = ToyRegression()
    opt = engine.build_optimizer(m, cfg)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"encoder": 1e-2, "encoder-nodecay": 1e-2, "new": 5e-2, "new-nodecay": 5e-2}
    m, res = _train(tmp_path, cfg, method=m)
    losses = [h["loss"] for h in res.history]
    assert res.steps == 8 * 4 and res.total_steps == 32 and res.epochs_completed == 8
    assert losses[-1] < 0.5 * losses[0]
    assert res.history[-1]["lr"] == [pytest.approx(0.0, abs=1e-9)] * 4  # cosine reached zero
    assert all(0.0 <= h["data_wait_s"] <= h["wall_s"] for h in res.history)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    big, _ = _train(tmp_path / "a", dataclasses.replace(CFG, epochs=1))
    acc, res = _train(tmp_path / "b", dataclasses.replace(CFG, epochs=1, grad_accum=4))
    assert res.per_process_batch == 2 and res.steps == 4
    for k, v in params_of(big).items():
        torch.testing.assert_close(params_of(acc)[k], v, rtol=1e-5, atol=1e-6)


def test_checkpoint_resume_is_bit_exact(tmp_path):
    straight, res = _train(tmp_path / "straight")
    with pytest.raises(SimulatedCrash):  # dies in epoch 2, after epoch 1's checkpoint
        _train(tmp_path / "split", toy=ToyConfig(crash_at_call=6))
    state = ckpt.load_checkpoint(tmp_path / "split" / "last.pt")  # weights_only=True inside
    assert state["epoch"] == 1 and state["step"] == 4 and state["micro_in_epoch"] == 0
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    resumed, res2 = _train(tmp_path / "split", resume=True)
    assert res2.resumed_from_step == 4 and res2.steps == 8
    assert straight.epochs_seen == [0, 1] and resumed.epochs_seen == [1] and resumed.epoch == 1
    assert straight.epoch_starts == [(0, 2), (1, 2)] and resumed.epoch_starts == [(1, 2)]
    for k, v in params_of(straight).items():
        assert torch.equal(params_of(resumed)[k], v), k
    assert [h["loss"] for h in res2.history] == [h["loss"] for h in res.history]


def test_max_steps_stops_mid_epoch_and_resume_finishes(tmp_path):
    cfg = dataclasses.replace(CFG, epochs=2, max_steps=3)
    _, res = _train(tmp_path, cfg)
    assert res.steps == 3 and res.total_steps == 3 and res.epochs_completed == 0
    assert res.history[-1]["partial"] is True
    state = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert (state["epoch"], state["step"], state["micro_in_epoch"]) == (0, 3, 3)
    # lifting the cap and resuming continues from micro-batch 3 of epoch 0
    _, res2 = _train(tmp_path, dataclasses.replace(CFG, epochs=2), resume=True)
    assert res2.resumed_from_step == 3 and res2.steps == 8 and res2.epochs_completed == 2
    assert [h["epoch"] for h in res2.history] == [1, 1, 2] and res2.history[1]["step"] == 4


def test_config_json_is_written_beside_the_checkpoint(tmp_path):
    _train(tmp_path, dataclasses.replace(CFG, epochs=1), config={"method": "toy", "seed": 0})
    assert json.loads((tmp_path / "config.json").read_text()) == {"method": "toy", "seed": 0}
    assert (tmp_path / "last.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # 4 steps per epoch: the NaN comes in epoch 2 (call 5), after epoch 1's checkpoint
    with pytest.raises(engine.NonFiniteLossError) as err:
        _train(tmp_path, toy=ToyConfig(nan_at_call=5))
    msg = str(err.value)
    assert "non-finite training loss at epoch 2" in msg and "mse=nan" in msg
    assert str(tmp_path / "last.pt") in msg
    state = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(engine.NonFiniteLossError, match="no checkpoint had been written yet"):
        _train(tmp_path, toy=ToyConfig(nan_at_call=0))
    assert not (tmp_path / "last.pt").exists()


def test_resume_refuses_another_runs_checkpoint(tmp_path):
    _train(tmp_path, dataclasses.replace(CFG, epochs=1), identity={"method": "a"})
    with pytest.raises(ckpt.CheckpointError, match="belongs to another run"):
        _train(tmp_path, resume=True, identity={"method": "b"})


def test_resume_accepts_an_identity_that_recorded_an_unused_key_as_none(tmp_path):
    """Checkpoints written while ``initial_weights`` was always recorded (None when unused)."""
    _train(tmp_path, dataclasses.replace(CFG, epochs=1), identity={"method": "a", "initial_weights": None})
    _, res = _train(tmp_path, resume=True, identity={"method": "a"})
    assert res.resumed_from_step is not None
    assert engine.same_identity({"method": "a", "x": None}, {"method": "a"})
    assert not engine.same_identity({"method": "a", "x": "w.pt"}, {"method": "a"})


def test_run_identity_keeps_its_keys_for_old_checkpoints():
    """Checkpoints of earlier versions carry exactly these keys; a key added for every run
    would make each of them 'another run' to --resume."""
    from benchmark.cli.run_setup import run_identity
    from benchmark.core.config import RunConfig, get_profile

    cfg = RunConfig(method="mgh", dataset="movingfashion-synth", profile=get_profile("tiny"))
    assert set(run_identity(cfg)) == {
        "method",
        "dataset",
        "profile",
        "seed",
        "method_overrides",
        "data_root",
        "synth_size",
    }
    assert run_identity(cfg, {"sha256": "ab" * 32})["initial_weights"] == "ab" * 32


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="last.pt: not a loadable checkpoint"):
        _train(tmp_path, resume=True)


def test_too_small_training_split_is_a_clear_error(tmp_path):
    with pytest.raises(engine.TrainingError, match="has 4 pairs; one optimizer step needs a global batch of 8"):
        _train(tmp_path, n=4)


def test_amp_is_off_on_the_cpu():
    assert engine.amp_dtype_for(torch.device("cpu"), True) is None
    assert engine.amp_dtype_for(torch.device("cuda"), False) is None


# --- two processes (gloo): DDP training and sharded extraction ---------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from benchmark.evaluation.evaluate import extract
    from benchmark.training.distributed import cleanup, init_distributed

    env = init_distributed("cpu")
    try:
        torch.manual_seed(123)
        m = ToyRegression()
        res = engine.train(
            m,
            RegressionData(32),
            dataclasses.replace(CFG, epochs=1),
            env=env,
            run_dir=Path(out),
            seed=0,
            show_progress=False,
        )
        enc = extract(m, RegressionData(13), "query", env=env, batch_size=4)  # 13: the sampler pads
        torch.save(
            {"params": params_of(m), "steps": res.steps, "emb": enc.embedding, "pb": res.per_process_batch},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        cleanup(env)


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single, res = _train(tmp_path / "single", dataclasses.replace(CFG, epochs=1))
    assert r0["steps"] == r1["steps"] == res.steps == 4 and r0["pb"] == 4
    for k, v in params_of(single).items():
        torch.testing.assert_close(r0["params"][k], v, rtol=1e-5, atol=1e-6)
        assert torch.equal(r0["params"][k], r1["params"][k])
    from benchmark.evaluation.evaluate import extract

    want = extract(single, RegressionData(13), "query", env=DistEnv(), batch_size=4, show_progress=False).embedding
    assert r0["emb"].shape == (13, 6)
    torch.testing.assert_close(r0["emb"], want, rtol=1e-5, atol=1e-6)
    assert torch.equal(r0["emb"], r1["emb"])
    assert math.isclose(float(want.norm(dim=1).mean()), 1.0, rel_tol=1e-5)
