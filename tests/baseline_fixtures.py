"""What the baseline test files share (one file per method: tests/test_fashionnet.py, test_asymnet.py,
test_nvan.py, test_mgh.py, test_timesformer.py, test_video_swin.py, test_seam_match_rcnn.py).

Toy batches in the format of ``methods/base.py`` (random tensors, fixed seeds), the one-thread
set-up of the CNN files, and the checks that several methods run with the same body (the loss
falls on a fixed batch, embedding shapes, per-side BatchNorm statistics, non-local blocks that
learn, a tiny run through the command line), each called by every method's own test; SEAM
Match-RCNN built at 64 px with narrow heads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.cli.main import main
from benchmark.core.registry import METHODS, load_builtin_methods
from benchmark.record.rescore import rescore
from methods.base import DataInfo, Method, build_method
from methods.domain_norm import DomainBatchNorm
from methods.nonlocal_blocks import NonLocalBlock, StripeNonLocalBlock
from methods.seam_match_rcnn import SeamMatchRCNN

CNN_SIZE = 32  # FashionNet, AsymNet, NVAN, MGH: reduced image size keeps every test a few seconds on 2 cores
VIDEO_SIZE = 112  # TimeSformer and Video Swin


# --- the CNN baselines (FashionNet, AsymNet, NVAN, MGH) --------------------------------------------


def registered_on_one_thread() -> Iterator[None]:
    """Body of each CNN file's module fixture: the built-in methods registered, and one thread
    (small convolutions run faster on one thread, and far faster on a shared, busy CPU)."""
    load_builtin_methods()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cnn_batch(b: int = 6, t: int = 8, size: int = CNN_SIZE, seed: int = 0) -> dict:
    """Clips whose frames are noisy copies of their product's shop image; padding in rows 1, 2."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, 1, 3, size, size, generator=g)
    frames = base.expand(b, t, 3, size, size) + 0.1 * torch.randn(b, t, 3, size, size, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    frames = frames * mask[:, :, None, None, None]
    image = base[:, 0] + 0.1 * torch.randn(b, 3, size, size, generator=g)
    return {
        "frames": frames,
        "frame_mask": mask,
        "boxes": torch.zeros(b, t, 4),
        "box_mask": torch.zeros(b, t, dtype=torch.bool),
        "asr": [""] * b,
        "image": image,
        "title": [""] * b,
        "product": torch.arange(b),
        "category": torch.tensor([0, 1, 2, 0, 1, -1])[:b],
        "index": torch.arange(b),
    }


def cnn_info(num_products: int = 6, num_frames: int = 8, size: int = CNN_SIZE) -> DataInfo:
    return DataInfo(num_products=num_products, num_categories=3, num_frames=num_frames, image_size=size)


def paper_model(cls: type[Method], **overrides: Any) -> Method:
    """``cls`` at its paper profile on the meta device: the architecture, no memory, no weights."""
    with torch.device("meta"):
        return build_method(
            cls,
            "paper",
            cnn_info(num_products=1000, num_frames=10, size=224),
            {"encoder.pretrained": None, **overrides},
        )


def nonlocal_params(c: int) -> int:
    """theta/phi/g 1x1x1 convs C -> C/2 with bias, W conv C/2 -> C with bias, BatchNorm on C."""
    return 3 * (c * (c // 2) + c // 2) + (c // 2) * c + c + 2 * c


def encode_with(method: Method, batch: dict, patch: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """encode_query's embedding, optionally with ``patch`` (a context manager) active."""
    method.eval()
    with torch.no_grad(), patch or contextlib.nullcontext():
        return method.encode_query(batch).embedding


def bypassed(modules: list[torch.nn.Module], fn: Callable) -> contextlib.AbstractContextManager:
    """Context manager: each module's forward replaced by ``fn(module, *args)``."""

    @contextlib.contextmanager
    def cm():
        saved = [(m, m.forward) for m in modules]
        try:
            for m in modules:
                m.forward = (lambda mod: lambda *a, **k: fn(mod, *a, **k))(m)
            yield
        finally:
            for m, f in saved:
                m.forward = f

    return cm()


def one_step(method: Method, batch: dict, lr: float = 1e-3) -> dict[str, torch.Tensor | None]:
    """One AdamW step on ``batch``; returns each parameter's gradient (None where it got none)."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=0.0)
    method.train()
    opt.zero_grad()
    sum(method.training_losses(batch).values()).backward()
    grads = {n: p.grad.detach().clone() if p.grad is not None else None for n, p in method.named_parameters()}
    opt.step()
    return grads


def check_tiny_training_loss_falls(name: str, overrides: dict) -> None:
    """The tiny profile's supervised losses fall by 20% in 8 steps on one fixed batch."""
    torch.manual_seed(0)
    method = build_method(METHODS.get(name), "tiny", cnn_info(), overrides)
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3, weight_decay=0.0)
    batch = cnn_batch()
    method.train()
    totals = []
    for _ in range(8):
        losses = method.training_losses(batch)
        assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
        # MGH's MI term is adversarial (critic vs network): judge the supervised losses
        total = sum(v for k, v in losses.items() if k != "mi")
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        totals.append(float(total.detach()))
    assert sum(totals[-2:]) / 2 < 0.8 * totals[0], totals


def check_embedding_shapes(name: str, overrides: dict) -> None:
    torch.manual_seed(0)
    method = build_method(METHODS.get(name), "tiny", cnn_info(), overrides).eval()
    batch = cnn_batch(b=3)
    batch["frame_mask"][0] = False  # a missing clip: no real frame at all
    with torch.no_grad():
        q = method.encode_query(batch)
        g = method.encode_gallery(batch)
    dim = {"fashionnet": 256, "asymnet": 128, "nvan": 256, "mgh": 256 + 3 * 128}[name]
    assert q.embedding.shape == (3, dim) and g.embedding.shape == (3, dim)
    assert torch.isfinite(q.embedding).all() and torch.isfinite(g.embedding).all()
    # only the re-ranker keeps extras: AsymNet's LSTM states (its 4 tiny frames) and image features
    extras = {"asymnet": ({"states": (3, 4, 128), "state_mask": (3, 4)}, {"feature": (3, 128)})}.get(name, ({}, {}))
    assert {k: tuple(v.shape) for k, v in q.extras.items()} == extras[0]
    assert {k: tuple(v.shape) for k, v in g.extras.items()} == extras[1]


def check_per_side_statistics_and_shared_bnneck(name: str) -> None:
    """NVAN and MGH (tiny) run clips and shop images (one-frame clips) in two calls: every
    BatchNorm but the BNNeck keeps one set of statistics per side, each updated once per step
    and used by its own side at test; the BNNeck sees both sides in one call."""
    method = build_method(METHODS.get(name), "tiny", cnn_info())
    plain = [m for m in method.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert plain == [method.bnneck]
    layers = [m for m in method.modules() if isinstance(m, DomainBatchNorm)]
    assert len(layers) > 10
    kinds = {m.input_dims for m in layers}  # trunk (2d), non-local (3d), MGH's graph layers (1d)
    assert kinds == ({(4,), (5,)} if name == "nvan" else {(2, 3), (4,), (5,)})
    method.train()
    batch = cnn_batch(b=4)
    method.training_losses(batch)
    for m in layers:
        assert m.num_batches_tracked.tolist() == [1, 1]
    assert int(method.bnneck.num_batches_tracked) == 1
    trunk_bn = next(m for m in layers if m.running_mean.shape[1] == 32)  # the stem's
    assert not torch.allclose(trunk_bn.running_mean[0], trunk_bn.running_mean[1])
    method.eval()
    with torch.no_grad():
        g, q = method.encode_gallery(batch).embedding, method.encode_query(batch).embedding
        for m in layers:
            m.running_mean[1].copy_(m.running_mean[0])
            m.running_var[1].copy_(m.running_var[0])
        assert not torch.allclose(method.encode_gallery(batch).embedding, g)  # shop statistics were used
        torch.testing.assert_close(method.encode_query(batch).embedding, q)  # frames' unchanged
    plain_cfg = dataclasses.replace(method.cfg, domain_batchnorm=False)
    assert not any(isinstance(m, DomainBatchNorm) for m in type(method)(plain_cfg, cnn_info()).modules())


def check_nonlocal_blocks_learn(name: str, overrides: dict) -> None:
    """The non-local blocks start as the identity (zero-initialised output BatchNorm), so a loss
    that falls proves nothing about them: their parameters must receive gradient, and after
    one step the embedding must differ from the same network with the blocks bypassed."""
    torch.manual_seed(0)
    method = build_method(METHODS.get(name), "tiny", cnn_info(), overrides)
    blocks = list(method.nonlocal_blocks.modules())
    blocks = [m for m in blocks if isinstance(m, (NonLocalBlock, StripeNonLocalBlock))]
    assert blocks
    batch = cnn_batch()
    identity = lambda mod, x: x  # noqa: E731
    before = encode_with(method, batch)
    torch.testing.assert_close(before, encode_with(method, batch, bypassed(blocks, identity)))  # identity at init
    grads = one_step(method, batch)
    for i, block in enumerate(blocks):
        names = [n for n, p in method.named_parameters() if any(p is q for q in block.W.parameters())]
        assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in names), (i, names)
    after = encode_with(method, batch)
    assert (after - encode_with(method, batch, bypassed(blocks, identity))).abs().max() > 1e-6


def check_tiny_cli_run(name: str, extra: list[str], label: str, tmp_path: Path, synth_lpr4m: Any, capsys: Any) -> None:
    """A tiny run (2 steps at batch 8) through the command line on lpr4m-synth: the submission's
    claimed metrics are what its rankings score against the ground truth."""
    rc = main(
        [
            "--method",
            name,
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
            "--bootstrap",
            "10",
            "--num-workers",
            "0",
            "--device",
            "cpu",
            "--no-leaderboard",
            "--output-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(tmp_path / "results"),
            *extra,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    stage = "__rerank-all" if "--rerank" in extra else ""  # a re-ranked evaluation's own file
    path = tmp_path / "results" / "submissions" / f"lpr4m-synth__tiny__{label}{stage}__seed0.json"
    sub = json.loads(path.read_text())
    assert sub["method"]["name"] == name and sub["method"]["config"]["num_frames"] == 4
    assert sub["metrics"]["num_queries"] == len(sub["rankings"]) == 20
    assert {"R1", "R5", "R10"} <= set(rescore(path, synth_lpr4m).verified)
    gt = {q.query_id: set(q.gt_ids) for q in synth_lpr4m.queries}
    hits = sum(bool(ids) and ids[0] in gt[qid] for qid, ids in sub["rankings"])
    assert sub["metrics"]["overall"]["R1"]["value"] == pytest.approx(100.0 * hits / 20)
    assert sub["protocol"]["rerank"] == ("all" if name == "asymnet" else "none")
    if name == "asymnet":
        assert sub["protocol"]["pairs_scored"] > 0
    assert (tmp_path / "runs" / "lpr4m-synth" / label / "tiny-seed0" / "last.pt").is_file()


# --- the video baselines (TimeSformer, Video Swin, SEAM Match-RCNN) ---------------------------------


def video_batch(b: int, t: int, seed: int = 0, short: bool = True, size: int = VIDEO_SIZE) -> dict:
    """A fixed random batch: clip 0 has one padded frame (when ``short``), boxes on most frames."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.bool)
    if short:
        mask[0, t - 1] = False
    xy = torch.rand(b, t, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.25 + 0.2 * torch.rand(b, t, 2, generator=g)], dim=-1).clamp(0, 1)
    return {
        "frames": torch.randn(b, t, 3, size, size, generator=g),
        "frame_mask": mask,
        "boxes": boxes,
        "box_mask": mask & (torch.rand(b, t, generator=g) > 0.2),
        "asr": [""] * b,
        "image": torch.randn(b, 3, size, size, generator=g),
        "title": [""] * b,
        "product": torch.arange(b),
        "category": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
    }


def train_steps(model: Method, batch: dict, steps: int, lr: float = 5e-4) -> list[float]:
    """Total loss of each of ``steps`` AdamW steps on the same batch."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    out = []
    for _ in range(steps):
        losses = model.training_losses(batch)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- SEAM Match-RCNN at reduced sizes -------------------------------------------------------------


SEAM_SIZE = 64  # the detector resizes to min_size; 64 px and narrower heads keep these tests fast


def seam_tiny(**overrides) -> SeamMatchRCNN:
    ov = {
        "fpn_channels": "32",
        "head_hidden": "64",
        "embed": "32",
        "min_size": SEAM_SIZE,
        "max_size": SEAM_SIZE,
        **overrides,
    }
    return build_method(SeamMatchRCNN, "tiny", DataInfo(8, 2, 3, SEAM_SIZE), {k: str(v) for k, v in ov.items()})


def seam_batch(b: int = 2, t: int = 3, short: bool = True) -> dict:
    return video_batch(b, t, short=short, size=SEAM_SIZE)


def aggregated_clips(model, batch) -> list[list[bool]]:
    """The frame masks of the clips the aggregation loss scores, in one training step."""
    seen = []
    real = model.aggregator.aggregate

    def record(feats, mask):
        seen.append(mask.tolist())
        return real(feats, mask)

    model.aggregator.aggregate = record
    try:
        model.set_epoch(1)
        model.train().training_losses(batch)
    finally:
        model.aggregator.aggregate = real
    return seen[0] if seen else []
