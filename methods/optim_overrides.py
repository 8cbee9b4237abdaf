"""Per-method optimiser settings from a paper, on top of the benchmark profile's.

The benchmark's ``paper`` profile carries RICE's settings (encoder lr 1e-6 for a CLIP ViT).
CNN baselines were trained with their own learning rates and weight decay; a method config
with ``lr_encoder`` / ``lr_new`` / ``weight_decay`` fields set (not None) overrides the
profile's values in :meth:`Method.parameter_groups`. None keeps the profile's value.
"""

from __future__ import annotations


class PaperOptimMixin:
    """Mix in before :class:`methods.base.Method`; reads ``self.cfg``."""

    def parameter_groups(self, lr_encoder: float, lr_new: float, weight_decay: float) -> list[dict]:
        cfg = self.cfg  # type: ignore[attr-defined]
        lr_encoder = cfg.lr_encoder if cfg.lr_encoder is not None else lr_encoder
        lr_new = cfg.lr_new if cfg.lr_new is not None else lr_new
        weight_decay = cfg.weight_decay if cfg.weight_decay is not None else weight_decay
        return super().parameter_groups(lr_encoder, lr_new, weight_decay)  # type: ignore[misc]
