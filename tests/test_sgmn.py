"""SGMN: shapes, the one-stage score, each named loss learning, the ablation switches, a paper step."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from benchmark.core.registry import METHODS
from methods.base import DataInfo, build_method
from methods.sgmn import Sgmn
from methods.sgmn_graph import GraphInteraction, distance_weighted_triplet
from tests.rice_fixtures import one_thread, toy_batch  # noqa: F401 (autouse fixture)

SMALL = {
    "encoder.width": 64,
    "encoder.layers": 2,
    "encoder.heads": 2,
    "encoder.embed_dim": 32,
    "encoder.text_width": 32,
    "encoder.text_layers": 1,
    "encoder.text_heads": 2,
    "encoder.context_length": 16,
}
LOSSES = ("base", "txt", "gnn", "reg", "smf")


def small_sgmn(num_frames: int = 3, seed: int = 0, **overrides: Any) -> Sgmn:
    torch.manual_seed(seed)
    info = DataInfo(num_products=50, num_categories=4, num_frames=num_frames, image_size=112)
    return build_method(Sgmn, "tiny", info, {**SMALL, **overrides})


def test_registered_shapes_and_losses() -> None:
    assert METHODS.get("sgmn") is Sgmn
    model = small_sgmn()
    assert model.variant() == "gra+text+gci+smf"
    assert not model.supports_rerank  # one stage
    batch = toy_batch(b=6, t=3)
    model.eval()
    with torch.no_grad():
        q, g = model.encode_query(batch), model.encode_gallery(batch)
    assert q.embedding.shape == (6, 64) and g.embedding.shape == (6, 64)  # [visual 32 | text 32]
    assert q.extras == {} and g.extras == {}
    model.train()
    losses = model.training_losses(batch)
    assert set(losses) == set(LOSSES)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_padding_frames_do_not_change_the_video_embedding() -> None:
    model = small_sgmn().eval()
    batch = toy_batch(b=3, t=3)  # clip 1 has a padding frame at t = 2
    other = dict(batch, frames=batch["frames"].clone())
    other["frames"][1, 2] = torch.randn(3, 112, 112)
    with torch.no_grad():
        a, b = model.encode_query(batch).embedding, model.encode_query(other).embedding
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "reg"])
def test_each_named_loss_falls_when_trained_alone(name: str) -> None:
    """Optimising one loss alone on a fixed toy batch lowers it (sampling and dropout seeded)."""
    model = small_sgmn(seed=1)
    batch = toy_batch(b=8, t=3, seed=3)
    model.train()

    def value() -> torch.Tensor:
        torch.manual_seed(123)  # the same negatives drawn and the same dropout masks each time
        return model.training_losses(batch)[name]

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    with torch.no_grad():
        before = float(value())
    for _ in range(15):
        opt.zero_grad()
        value().backward()
        opt.step()
    with torch.no_grad():
        after = float(value())
    assert after < 0.8 * before, (name, before, after)


def test_graph_reg_loss_falls_when_trained_alone() -> None:
    """``reg`` trains only the frame-level matching MLPs. From a random encoder every embedding
    is nearly the same and the loss starts near 1e-3 with gradients below Adam's epsilon, so
    this uses structured unit vectors: images, clips near them, frames near their clip."""
    torch.manual_seed(0)
    graph = GraphInteraction(32, 3)
    image = F.normalize(torch.randn(8, 32), dim=-1)
    video = F.normalize(image + 0.5 * torch.randn(8, 32), dim=-1)
    frames = F.normalize(video[:, None] + 0.5 * torch.randn(8, 3, 32), dim=-1)
    opt = torch.optim.Adam(graph.parameters(), lr=1e-2)

    def value() -> torch.Tensor:
        torch.manual_seed(1)
        return graph(video, image, frames)["reg"]

    before = float(value().detach())
    for _ in range(20):
        opt.zero_grad()
        value().backward()
        opt.step()
    assert float(value().detach()) < 0.5 * before
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in graph.gnn.parameters())  # reg: MLPs only


def test_distance_weighted_triplet_values() -> None:
    """With every negative at cosine 0.8 and every positive at 0.9 the sampled negative does not
    matter: relu(0.2 + 0.8 - 0.9) = 0.1 per anchor, in both directions."""
    n = 5
    sim = torch.full((n, n), 0.8)
    sim.fill_diagonal_(0.9)
    labels = torch.arange(n)
    loss = distance_weighted_triplet(sim, labels, labels, margin=0.2, dim=32)
    torch.testing.assert_close(loss, torch.tensor(2 * n * 0.1))
    sim.fill_diagonal_(1.0)  # margins met: nothing to learn
    assert float(distance_weighted_triplet(sim, labels, labels, margin=0.2, dim=32)) == 0.0
    # a second clip of the same product is a positive, never a negative
    same = torch.tensor([0, 0, 1, 2, 3])
    sim = torch.full((n, n), 0.5)
    sim.fill_diagonal_(0.9)
    sim[0, 1] = sim[1, 0] = 0.95  # far above the margin only if counted as a negative
    loss = distance_weighted_triplet(sim, same, same, margin=0.2, dim=32)
    # pairs (0,1) and (1,0) are positives at 0.95 against negatives at 0.5: no violation
    assert float(loss) == 0.0


def test_without_text_guidance_the_output_ignores_the_text() -> None:
    batch = toy_batch(b=4, t=3)
    changed = dict(batch, asr=["something else entirely"] * 4, title=["another title"] * 4)
    for text, same in ((True, False), (False, True)):
        model = small_sgmn(text=text).eval()
        with torch.no_grad():
            q1, q2 = model.encode_query(batch).embedding, model.encode_query(changed).embedding
            g1, g2 = model.encode_gallery(batch).embedding, model.encode_gallery(changed).embedding
        assert (torch.equal(q1, q2) and torch.equal(g1, g2)) is same
    model = small_sgmn(text=False)
    assert model.variant() == "gra+gci+smf"
    assert model.fc_asr is None and model.fusion is None
    torch.manual_seed(0)
    a = model.training_losses(batch)
    torch.manual_seed(0)
    b = model.training_losses(changed)
    assert "txt" not in a
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    # the text tower is only the cross model's initialisation source here: nothing trains it
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder.transformer."))


def test_without_graph_or_mining_their_losses_and_modules_are_gone() -> None:
    batch = toy_batch(b=6, t=3)
    no_graph = small_sgmn(graph=False)
    assert no_graph.variant() == "gra+text+smf" and no_graph.graph is None
    assert set(no_graph.training_losses(batch)) == {"base", "txt", "smf"}
    no_mining = small_sgmn(mining=False)
    assert no_mining.variant() == "gra+text+gci" and no_mining.matcher is None
    assert set(no_mining.training_losses(batch)) == {"base", "txt", "gnn", "reg"}
    bare = small_sgmn(text=False, graph=False, mining=False)
    assert bare.variant() == "gra" and set(bare.training_losses(batch)) == {"base"}
    assert not any(n.startswith(("graph.", "matcher.", "fusion.", "fc_")) for n, _ in bare.named_parameters())
    # the full model's graph and matcher do receive gradients
    full = small_sgmn()
    sum(full.training_losses(batch).values()).backward()
    for prefix in ("graph.", "matcher.", "fusion.", "fc_asr.", "temporal."):
        grads = [p.grad for n, p in full.named_parameters() if n.startswith(prefix) and p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), prefix


def test_hard_negatives_are_the_highest_scored_other_products() -> None:
    """SMF's candidates: the pair's own clip, then the clips the full score ranks highest,
    skipping clips of the same product (checked through the matcher's key indices)."""
    model = small_sgmn()
    batch = toy_batch(b=6, t=3)
    batch["product"] = torch.tensor([0, 0, 1, 2, 3, 4])
    seen: dict[str, torch.Tensor] = {}
    original = model.matcher.forward

    def spy(queries, keys, key_keep, key_index, query_index):  # type: ignore[no-untyped-def]
        seen["key_index"] = key_index.clone()
        return original(queries, keys, key_keep, key_index, query_index)

    model.matcher.forward = spy  # type: ignore[method-assign]
    model.eval()  # the score below is computed without dropout, as inside
    model.training_losses(batch)
    cand = seen["key_index"].view(6, 4)
    assert torch.equal(cand[:, 0], torch.arange(6))
    with torch.no_grad():
        video, _, _ = model._video(batch["frames"], batch["frame_mask"].bool(), tokens=False)
        image, _ = model._image(batch["image"])
        score = (
            image @ video.t()
            + 0.5 * model._text(batch["title"], 6, model.fc_title) @ model._text(batch["asr"], 6, model.fc_asr).t()
        )
    for i in range(6):
        allowed = [j for j in range(6) if batch["product"][j] != batch["product"][i]]
        expected = sorted(allowed, key=lambda j: -float(score[i, j]))[:3]
        assert cand[i, 1:].tolist() == expected
    assert 1 not in cand[0, 1:].tolist() and 0 not in cand[1, 1:].tolist()


def test_paper_profile_step_on_cpu() -> None:
    """The paper profile's shapes (ViT-B/32, 224 px, 10 frames), random init, batch 2: one step."""
    info = DataInfo(num_products=10, num_categories=2, num_frames=10, image_size=224)
    torch.manual_seed(0)
    model = build_method(
        Sgmn,
        "paper",
        info,
        {"encoder.pretrained": "none", "encoder.text_pretrained": None, "require_pretrained": False},
    )
    cfg = model.cfg
    assert cfg.tdb_layers == 2 and not hasattr(cfg, "lr_encoder")  # its rates are in TRAIN_RECIPE (command line wins)
    assert model.encoder.grid == 7 and model.encoder.embed_dim == 512
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder.transformer."))
    recipe = Sgmn.TRAIN_RECIPE["paper"]
    groups = model.parameter_groups(recipe["lr_encoder"], recipe["lr_new"], recipe["weight_decay"])
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}
    assert lrs["encoder"] == (3e-7, 0.2) and lrs["new"] == (3e-4, 0.2) and lrs["new-nodecay"] == (3e-4, 0.0)
    # train.py's no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight'], matched as substrings
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            official = 0.0 if any(k in name for k in ("bias", "LayerNorm.bias", "LayerNorm.weight")) else 0.2
            assert decay[id(p)] == official, name
    named = dict(model.named_parameters())
    assert decay[id(named["encoder.visual.transformer.resblocks.0.ln_1.weight"])] == 0.2  # CLIP's LNs decay
    assert decay[id(named["encoder.visual.positional_embedding"])] == 0.2
    assert decay[id(named["temporal.frame_position.weight"])] == 0.2
    batch = toy_batch(b=2, t=10)
    batch["frames"] = torch.randn(2, 10, 3, 224, 224)
    batch["image"] = torch.randn(2, 3, 224, 224)
    opt = torch.optim.AdamW(groups)
    before = model.temporal.frame_position.weight.detach().clone()
    losses = model.training_losses(batch)
    assert set(losses) == set(LOSSES) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    opt.step()
    assert not torch.equal(before, model.temporal.frame_position.weight.detach())
    model.eval()
    with torch.no_grad():
        assert model.encode_query(batch).embedding.shape == (2, 1024)


def test_paper_profile_refuses_random_weights() -> None:
    info = DataInfo(num_products=10, num_categories=2, num_frames=10, image_size=224)
    with pytest.raises(ValueError, match="pretrained CLIP weights"):
        build_method(Sgmn, "paper", info, {"encoder.pretrained": "none"})
    assert dataclasses.replace(Sgmn.default_config("tiny")).train_text_tower


def test_training_step_under_autocast() -> None:
    """The paper profile trains in fp32 (official); ``--set``-able autocast still runs (CPU bf16)."""
    model = small_sgmn()
    batch = toy_batch(b=6, t=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.training_losses(batch)
    assert set(losses) == set(LOSSES) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.encode_query(batch).embedding.shape == (6, 64)


def test_paper_profile_trains_with_the_official_command_and_options_still_override() -> None:
    """README's command: --epochs=10 --batch_size=256 --lr 3e-4 --coef_lr 1e-3 (train.py: weight
    decay 0.2, warmup 0.1, BertAdam e=1e-6, clip_grad_norm 1.0), not the shared paper profile's
    RICE run (batch 128, 5,000 updates, no clip)."""
    from benchmark.cli.args import load_registries, resolve_run_config
    from benchmark.cli.main import build_parser
    from benchmark.core.config import get_profile
    from benchmark.record.config_diff import recipe_changes

    load_registries([])
    parser = build_parser()
    cfg = resolve_run_config(parser.parse_args(["run", "--method", "sgmn", "--dataset", "lpr4m", "--profile", "paper"]))
    t = cfg.profile.train
    assert (t.batch_size, t.epochs, t.updates, t.grad_clip, t.adam_eps) == (256, 10, None, 1.0, 1e-6)
    assert (t.lr_encoder, t.lr_new, t.weight_decay, t.warmup_ratio) == (3e-7, 3e-4, 0.2, 0.1)
    # BertAdam(b2=0.98, schedule='warmup_cosine'), the model in .float(), no --fp16
    assert (t.adam_beta2, t.schedule, t.amp) == (0.98, "bert_warmup_cosine", False)
    # rawframe_util.py: Resize((224, 224)) bicubic (a square), CenterCrop(224); no spatial augmentation
    d = cfg.profile.data
    assert (d.resize_size, d.image_size, d.resize_mode, d.interpolation) == (224, 224, "square", "bicubic")
    assert d.train_jitter and not d.train_spatial and d.eval_frame_pick == "rice-mf"
    assert get_profile("paper").data.resize_size == 256  # RICE's run keeps its 256 squash
    assert get_profile("paper").train.batch_size == 128  # RICE's run keeps the shared profile
    assert recipe_changes("paper", t, cfg.profile.method_recipe) == {}  # no train.* suffix on its label
    assert recipe_changes("paper", t) != {}
    small = resolve_run_config(
        parser.parse_args(["run", "--method", "sgmn", "--dataset", "lpr4m", "--profile", "paper", "--batch-size", "64"])
    )
    assert small.profile.train.batch_size == 64
    lr = resolve_run_config(
        parser.parse_args(
            ["run", "--method", "sgmn", "--dataset", "lpr4m", "--profile", "paper", "--lr-encoder", "1e-6"]
        )
    )
    assert lr.profile.train.lr_encoder == 1e-6  # and the method no longer replaces it in its parameter groups:
    info = DataInfo(num_products=10, num_categories=2, num_frames=4, image_size=112)
    model = build_method(Sgmn, "tiny", info)
    t = lr.profile.train
    rates = {g["name"]: g["lr"] for g in model.parameter_groups(t.lr_encoder, t.lr_new, t.weight_decay)}
    assert rates["encoder"] == 1e-6 and rates["new"] == 3e-4
    assert recipe_changes("paper", small.profile.train, small.profile.method_recipe) == {"train.batch_size": 64}
    tiny = resolve_run_config(
        parser.parse_args(["run", "--method", "sgmn", "--dataset", "lpr4m-synth", "--profile", "tiny"])
    )
    assert tiny.profile == get_profile("tiny") and not tiny.profile.method_recipe


def test_bert_warmup_cosine_is_bertadams_schedule() -> None:
    """optimization.py: x < warmup: x / warmup, else 0.5 (1 + cos(pi x)), x = step / t_total."""
    from benchmark.core.config import TrainConfig
    from benchmark.training.engine import lr_schedule

    total, warmup = 200, 0.1
    factor = lr_schedule(TrainConfig(schedule="bert_warmup_cosine", warmup_ratio=warmup), 20, total)
    for step in (0, 1, 19, 20, 21, 100, 199):
        x = step / total
        official = x / warmup if x < warmup else 0.5 * (1.0 + math.cos(math.pi * x))
        assert factor(step) == pytest.approx(official, abs=1e-12), step
    assert factor(0) == 0.0 and factor(20) < 1.0  # from 0, and no plateau at 1: the cosine spans the run


def test_official_smf_target_is_crossen_on_the_first_four_rows() -> None:
    """--set smf_target=official: CrossEn = -mean(diag(log_softmax(logits))) on [B, 4] logits."""
    batch = toy_batch(b=6, t=3)
    losses = {}
    captured: dict[str, torch.Tensor] = {}
    for target in ("positive", "official"):
        model = small_sgmn(smf_target=target).eval()
        original = model.matcher.forward

        def spy(*args, _orig=original, _target=target):  # type: ignore[no-untyped-def]
            out = _orig(*args)
            captured[_target] = out.detach()
            return out

        model.matcher.forward = spy  # type: ignore[method-assign]
        losses[target] = model.training_losses(batch)["smf"].detach()
        assert model.variant().endswith("smf-official" if target == "official" else "+smf")
    for target, loss in losses.items():
        logits = 100.0 * captured[target].view(6, 4)
        logp = logits.log_softmax(-1)
        expected = -logp.diagonal().mean() if target == "official" else -logp[:, 0].mean()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="smf_target='diag': expected one of positive, official"):
        small_sgmn(smf_target="diag")
