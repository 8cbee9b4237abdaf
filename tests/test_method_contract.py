"""The method contract is declared in one place: every hook the harness calls on a method is a
member of ``methods.base.Method`` with a default and a docstring, the harness never probes a method
with ``getattr``/``hasattr``, and per-method optimiser settings have one mechanism (TRAIN_RECIPE)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from benchmark.core.config import DataConfig, TrainConfig
from benchmark.core.registry import METHODS, load_all
from methods.base import Method, overrides_hook

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmark"
HOOKS = (
    "default_config",
    "set_epoch",
    "variant",
    "encode_query",
    "encode_gallery",
    "training_losses",
    "on_epoch_start",
    "rerank",
    "needs_rerank_validation",
    "second_stage_scores",
    "set_rerank_fuse_weight",
    "cross_attention_maps",
    "intent_boxes",
    "parameter_groups",
    "num_parameters",
)


@pytest.fixture(scope="module", autouse=True)
def _registered():
    load_all(())


def test_every_hook_is_declared_on_method_with_a_docstring():
    for name in HOOKS:
        member = Method.__dict__.get(name)
        assert member is not None, f"Method does not declare {name}"
        func = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        assert (func.__doc__ or "").strip(), f"Method.{name} has no docstring"


def _method_calls(tree: ast.AST) -> set[str]:
    """Attributes read from names the harness gives a method: ``method.X`` / ``model.X``."""
    out = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("method", "model")
        ):
            out.add(node.attr)
    return out


def test_the_harness_calls_only_declared_members_and_never_probes():
    probes, undeclared = [], set()
    declared = set(dir(Method)) | {"cfg", "info", "epoch", "training"}  # instance attributes (nn.Module's training)
    for path in sorted(BENCHMARK.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in ("method", "model", "cls")
            ):
                probes.append(f"{path.relative_to(BENCHMARK.parent)}:{node.lineno}")
        undeclared |= {a for a in _method_calls(tree) if a not in declared}
    assert not probes, f"getattr/hasattr probing of a method: {probes}"
    assert not undeclared, f"the harness uses method members Method does not declare: {sorted(undeclared)}"


def test_per_method_optimiser_settings_have_one_mechanism():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    for entry in METHODS:
        cls = entry.obj
        for profile, recipe in cls.TRAIN_RECIPE.items():
            assert set(recipe) - {"data"} <= fields, f"{entry.name} TRAIN_RECIPE[{profile}] has non-TrainConfig keys"
            assert set(recipe.get("data", {})) <= data_fields, f"{entry.name} TRAIN_RECIPE[{profile}]['data']"
        for profile in cls.PROFILES:
            cfg_fields = {f.name for f in dataclasses.fields(cls.default_config(profile))}
            assert not cfg_fields & {"lr_encoder", "lr_new", "weight_decay"}, (
                f"{entry.name}: optimiser settings in the method config (use TRAIN_RECIPE)"
            )
        assert cls.parameter_groups is Method.parameter_groups or "parameter_groups" in cls.__dict__


def test_rice_declares_the_analysis_hooks_and_clip_meanpool_keeps_the_defaults():
    rice, clip = METHODS.get("rice"), METHODS.get("clip-meanpool")
    assert overrides_hook(rice, "cross_attention_maps") and overrides_hook(rice, "intent_boxes")
    assert overrides_hook(rice, "set_rerank_fuse_weight")
    assert not overrides_hook(clip, "cross_attention_maps") and not overrides_hook(clip, "set_rerank_fuse_weight")
