"""``--set`` overrides: typed conversion of Optional fields, and the run label of a changed config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest
import torch

from benchmark.core.registry import METHODS, load_builtin_methods
from benchmark.record.config_diff import (
    changed_fields,
    recipe_changes,
    settings_label,
    strip_recipe,
    variant_with_settings,
)
from methods.base import DataInfo, Method, apply_overrides, build_method

load_builtin_methods()


@dataclass(frozen=True)
class _Inner:
    pretrained: Optional[str] = None
    layers: int = 2


@dataclass(frozen=True)
class _Cfg:
    inner: _Inner = field(default_factory=_Inner)
    frames: Optional[int] = None
    mean: Optional[tuple[float, float, float]] = None
    scale: Optional[float] = 1.0
    ablate: bool = False
    name: str = "a"


class _Toy(Method):
    Config = _Cfg
    PROFILES = {"tiny": _Cfg()}

    def __init__(self, cfg: _Cfg, info: DataInfo) -> None:
        super().__init__(cfg, info)
        self.lin = torch.nn.Linear(2, 2)

    def variant(self) -> str:
        return "ablated" if self.cfg.ablate else ""


INFO = DataInfo(num_products=4, num_categories=2, num_frames=4, image_size=112)


def test_optional_fields_get_their_declared_type():
    cfg = apply_overrides(_Cfg(), {"frames": "6", "mean": "0.5,0.25,1", "scale": "none", "inner.pretrained": "none"})
    assert cfg.frames == 6 and isinstance(cfg.frames, int)
    assert cfg.mean == (0.5, 0.25, 1.0)
    assert cfg.scale is None and cfg.inner.pretrained is None
    assert apply_overrides(_Cfg(), {"inner.pretrained": "/w.pt"}).inner.pretrained == "/w.pt"
    assert apply_overrides(_Cfg(), {"name": "none"}).name == "none"  # not Optional: text stays text
    with pytest.raises(ValueError, match="frames='six'"):
        apply_overrides(_Cfg(), {"frames": "six"})


def test_changed_fields_are_dotted():
    cur = apply_overrides(_Cfg(), {"inner.layers": "3", "frames": "0"})
    assert changed_fields(_Cfg(), cur) == {"inner.layers": 3, "frames": 0}


def test_unnamed_settings_join_the_variant_named_ones_do_not():
    default = _Toy.default_config("tiny")
    assert variant_with_settings(build_method(_Toy, "tiny", INFO), default) == ""
    assert variant_with_settings(build_method(_Toy, "tiny", INFO, {"ablate": "true"}), default) == "ablated"
    both = build_method(_Toy, "tiny", INFO, {"ablate": "true", "inner.layers": "3", "mean": "0,0,0"})
    assert variant_with_settings(both, default) == "ablated+inner.layers-3+mean-0.0_0.0_0.0"
    # a weights file in place of the default's (none) is where training starts, not another model ...
    assert variant_with_settings(build_method(_Toy, "tiny", INFO, {"inner.pretrained": "/w.pt"}), default) == ""
    # ... and a --weights run ignores the loader's own pretrained change
    weights_default = apply_overrides(default, {"inner.pretrained": "hub"})
    assert (
        variant_with_settings(build_method(_Toy, "tiny", INFO, {"inner.pretrained": "none"}), weights_default)
        == "inner.pretrained-none"
    )
    assert (
        variant_with_settings(
            build_method(_Toy, "tiny", INFO, {"inner.pretrained": "none"}), weights_default, ignore_weights=True
        )
        == ""
    )


def test_long_settings_are_named_by_a_stable_hash():
    long = {f"field_{i}": i for i in range(8)}
    label = settings_label(long)
    assert label.startswith("set-") and len(label) == 12
    assert settings_label(dict(reversed(list(long.items())))) == label
    assert settings_label({"a": 1}) == "a-1"
    assert settings_label({"name": "a b/c"}).startswith("set-")  # outside the schema's characters


def test_real_methods_video_swin_and_rice():
    info = DataInfo(num_products=10, num_categories=3, num_frames=4, image_size=112)
    swin = METHODS.get("video-swin")
    m = build_method(swin, "tiny", info, {"drop_path": "0.1", "depths": "2,2,2,2"})
    assert variant_with_settings(m, swin.default_config("tiny")) == "depths-2_2_2_2+drop_path-0.1"
    same = build_method(swin, "tiny", info, {"drop_path": "0"})  # the tiny default itself: no label
    assert variant_with_settings(same, swin.default_config("tiny")) == ""
    rice = METHODS.get("rice")
    r = build_method(rice, "tiny", info, {"pfr_target": "raw"})  # RICE names this change itself
    assert variant_with_settings(r, rice.default_config("tiny")) == r.variant() == "icl+pmd+pfr+ipd+text"


def test_training_recipe_changes_join_the_label_and_operational_ones_do_not():
    """``--epochs``/``--batch-size``/learning rates/weight decay changed from the profile's are
    part of what a row was trained under; ``--max-steps``, ``--grad-accum`` (same global batch)
    and ``--checkpoint-every`` are how it ran."""
    import dataclasses

    from benchmark.core.config import PROFILES

    tiny = PROFILES["tiny"].train
    assert recipe_changes("tiny", tiny) == {}
    ops = dataclasses.replace(tiny, max_steps=3, grad_accum=2, checkpoint_every=5, amp=not tiny.amp)
    assert recipe_changes("tiny", ops) == {}
    changed = dataclasses.replace(tiny, epochs=8, lr_new=1e-3, batch_size=tiny.batch_size)
    recipe = recipe_changes("tiny", changed)
    assert recipe == {"train.epochs": 8, "train.lr_new": 1e-3}
    assert recipe_changes("tiny", dataclasses.asdict(changed)) == recipe  # a submission's JSON form
    assert recipe_changes("no-such-profile", changed) == {}
    toy = build_method(_Toy, "tiny", INFO, {"frames": "4"})
    label = variant_with_settings(toy, _Cfg(), recipe=recipe)
    assert label == "frames-4+train.epochs-8+train.lr_new-0.001"
    assert strip_recipe(label, recipe) == "frames-4" and strip_recipe("train.epochs-8", {"train.epochs": 8}) == ""
    assert strip_recipe("frames-4", recipe) == "frames-4"  # nothing to strip
    long = {f"train.{k}": 0.123456789 for k in ("lr_encoder", "lr_new", "weight_decay")}
    assert settings_label(long, hashed="train").startswith("train-") and settings_label({}) == ""
