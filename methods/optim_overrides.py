"""Per-method optimiser settings from a paper, on top of the benchmark profile's.

A method's own paper settings belong in its ``TRAIN_RECIPE`` (applied to the resolved profile,
under command-line options); this mixin lets ``--set lr_encoder=...`` / ``lr_new`` /
``weight_decay`` on the method config replace the profile's values in
:meth:`Method.parameter_groups`. None (every profile's default) keeps the profile's value.
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
