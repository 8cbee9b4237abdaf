"""A method plugin for the scale-out and failure tests (loaded with ``--plugin``).

``clip-meanpool-faults`` is ``clip-meanpool`` (same encoder, same embeddings) with

* ``loss``: ``infonce`` (clip-meanpool's own loss: symmetric InfoNCE, negatives gathered
  across ranks) or ``id`` (product-id cross-entropy of both embeddings through one linear
  classifier: a per-sample mean, so gradient accumulation is exactly one big batch);
* ``nan_at_call``: ``training_losses`` returns NaN on that call (0-based), to test the stop;
* the environment variable ``LPR_TEST_STALL_AT_CALL``: on that call ``training_losses``
  blocks forever (a stand-in for a long step), so that a test can SIGKILL the process at
  a known point after its last checkpoint. It is not part of the config on purpose: the
  stalled run and its resumption must have the same identity;
* the environment variable ``LPR_TEST_SEEN_DIR``: each ``training_losses`` call appends the
  batch's pair indices to ``<dir>/rank<RANK>.txt`` (which pairs each DDP rank trained on).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.registry import METHODS
from methods.base import DataInfo
from methods.clip_meanpool import ClipMeanPool, ClipMeanPoolConfig
from methods.encoders import TINY_ENCODER


@dataclass(frozen=True)
class FaultsConfig(ClipMeanPoolConfig):
    loss: str = "infonce"  # "infonce" | "id"
    nan_at_call: int = -1


@METHODS.register("clip-meanpool-faults", description="test plugin: clip-meanpool with injectable faults")
class ClipMeanPoolFaults(ClipMeanPool):
    Config = FaultsConfig
    PROFILES = {"tiny": FaultsConfig(encoder=TINY_ENCODER), "paper": FaultsConfig()}

    def __init__(self, cfg: FaultsConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        if cfg.loss not in ("infonce", "id"):
            raise ValueError(f"loss must be infonce or id, got {cfg.loss!r}")
        self.classifier = nn.Linear(cfg.encoder.embed_dim, max(1, info.num_products))
        self.calls = 0

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        stall = os.environ.get("LPR_TEST_STALL_AT_CALL")
        if stall is not None and int(stall) == self.calls:
            time.sleep(3600)
        seen = os.environ.get("LPR_TEST_SEEN_DIR")
        if seen:
            with open(os.path.join(seen, f"rank{os.environ.get('RANK', '0')}.txt"), "a") as fh:
                fh.write(" ".join(str(int(i)) for i in batch["index"]) + "\n")
        if self.cfg.loss == "infonce":
            losses = super().training_losses(batch)
        else:
            video = self.encode_query(batch).embedding
            image = self.encode_gallery(batch).embedding
            ce = F.cross_entropy(self.classifier(video), batch["product"]) + F.cross_entropy(
                self.classifier(image), batch["product"]
            )
            # "id" does not use the logit scale; 0 * it keeps every parameter in the graph
            losses = {"id": ce + 0.0 * self.encoder.logit_scale}
        if self.calls == self.cfg.nan_at_call:
            losses = {k: v * float("nan") for k, v in losses.items()}
        self.calls += 1
        return losses
