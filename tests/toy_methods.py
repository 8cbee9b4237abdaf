"""Small in-memory methods and datasets for the engine and evaluator tests (no images, no CLIP).

``ToyRegression`` has an "encoder" and a "new" module and a per-sample mean loss, so that
gradient accumulation and data-parallel training give the same update as one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from methods.base import DataInfo, Encoded, Method


@dataclass(frozen=True)
class ToyConfig:
    dim: int = 6
    nan_at_call: Optional[int] = None  # training_losses returns NaN on this call (0-based)
    crash_at_call: Optional[int] = None  # training_losses raises SimulatedCrash on this call


class SimulatedCrash(RuntimeError):
    pass


class ToyRegression(Method):
    """Linear encoder + linear head regressing a fixed target from ``x``."""

    Config = ToyConfig
    PROFILES = {"tiny": ToyConfig(), "paper": ToyConfig()}

    def __init__(self, cfg: ToyConfig = ToyConfig(), info: Optional[DataInfo] = None) -> None:
        super().__init__(cfg, info or DataInfo(num_products=1, num_categories=0, num_frames=1, image_size=1))
        self.encoder = nn.Linear(cfg.dim, cfg.dim)
        self.head = nn.Linear(cfg.dim, 1)
        self.calls = 0
        self.epochs_seen: list[int] = []
        self.epoch_starts: list[tuple[int, int]] = []

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.epoch_starts.append((epoch, num_epochs))

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epochs_seen.append(epoch)

    def encode_query(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.encoder(batch["x"]))

    def encode_gallery(self, batch: dict[str, Any]) -> Encoded:
        return Encoded(self.encoder(batch["x"]))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        pred = self.head(torch.tanh(self.encoder(batch["x"]))).squeeze(-1)
        loss = F.mse_loss(pred, batch["y"])
        if self.cfg.crash_at_call is not None and self.calls == self.cfg.crash_at_call:
            raise SimulatedCrash(f"simulated crash at call {self.calls}")
        if self.cfg.nan_at_call is not None and self.calls == self.cfg.nan_at_call:
            loss = loss * float("nan")
        self.calls += 1
        return {"mse": loss}


class RegressionData(Dataset):
    """``n`` items ``{"x", "y", "index"}`` from a fixed random linear map."""

    def __init__(self, n: int = 32, dim: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, generator=g)
        self.y = self.x @ w

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def params_of(method: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}
