"""RICE's analysis views (``run_benchmark.py visualize``): PMD's cross-attention maps and the
boxes its intent-product masks are built from at test time. A mixin of :class:`methods.rice.Rice`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from methods.ipd import predict_boxes


class RiceAnalysisMixin:
    """Needs ``pmd``, ``encoder``, ``detector``, ``cfg`` and the sides of :class:`methods.rice.Rice`."""

    @torch.no_grad()
    def cross_attention_maps(self, query_batch: dict[str, Any], gallery_batch: dict[str, Any]) -> Tensor:
        """PMD's cross-attention from the image's token 0 (the pooled one) over the first clip's
        frames, averaged over heads: [T, grid, grid] (zeros on padding frames and dropped patches)."""
        if self.pmd is None:
            raise RuntimeError("rice: cross-attention maps need pmd=true")
        was_training = self.training
        self.eval()
        try:
            q = self._video_side(query_batch, train=False)
            g = self._image_side(gallery_batch)
            _, attn = self.pmd(g.tokens[:1], g.keep[:1], q.tokens[:1], q.keep[:1], need_weights=True)
        finally:
            self.train(was_training)
        t = query_batch["frames"].shape[1]
        n = self.encoder.num_tokens
        maps = attn[0, :, 0, : t * n].float().mean(0).view(t, n)[:, 1:]
        return maps.reshape(t, self.encoder.grid, self.encoder.grid)

    @torch.no_grad()
    def intent_boxes(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The boxes IPD masks with at test time: [B, T, 4] xyxy in [0, 1] and found [B, T]."""
        frame_mask = batch["frame_mask"].bool()
        if self.cfg.ipd == "oracle":
            return batch["boxes"].float(), batch["box_mask"].bool() & frame_mask
        if self.detector is None:
            return torch.zeros(*frame_mask.shape, 4, device=frame_mask.device), torch.zeros_like(frame_mask)
        was_training = self.training
        self.eval()
        try:
            pred, found = predict_boxes(*self._detect(batch), self.cfg.det_score_threshold)
        finally:
            self.train(was_training)
        return pred, found & frame_mask
