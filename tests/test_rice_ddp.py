"""RICE under DDP without ``find_unused_parameters``: two gloo processes, one of which never
has a boxed frame, take two steps (DDP raises at the second forward if any parameter missed
its gradient in the first) and end with the same weights. With one micro-batch a step DDP runs
with ``static_graph``; with two (the first under ``no_sync``) without it, which torch's reducer
would refuse at the first step."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, accum: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from benchmark.core.config import TrainConfig
    from benchmark.training import engine
    from benchmark.training.distributed import cleanup, init_distributed
    from benchmark.training.loop import micro_step, optimizer_step
    from tests.rice_fixtures import paper_small_rice, toy_batch, with_indices

    env = init_distributed("cpu")
    try:
        torch.manual_seed(0)
        m = paper_small_rice()
        cfg = TrainConfig(epochs=1, batch_size=8, lr_encoder=1e-4, lr_new=1e-3, amp=False, grad_accum=accum)
        tr, _ = engine._build_trainer(m, 8, cfg, env, out, None, None)
        assert not tr.module.find_unused_parameters and tr.module.static_graph == (accum == 1)
        for step in range(2):
            for micro in range(accum):
                batch = toy_batch(b=4 // accum, t=3, seed=100 * rank + 10 * step + micro)
                if rank == 1:
                    batch["box_mask"][:] = False  # this rank never sees a box
                micro_step(tr, with_indices(batch), micro == accum - 1)
            optimizer_step(tr)
        torch.save({k: v.detach() for k, v in m.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        cleanup(env)


@pytest.mark.slow
@pytest.mark.parametrize("accum", [1, 2])
def test_rice_trains_under_ddp_without_the_unused_parameter_search(tmp_path, accum):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), accum), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
