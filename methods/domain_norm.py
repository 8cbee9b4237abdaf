"""Domain-specific BatchNorm statistics for a network shared by frames and shop images.

After Chang et al., "Domain-Specific Batch Normalization for Unsupervised Domain Adaptation",
CVPR 2019: one network, one set of normalisation statistics per input domain. Here the affine
weights stay shared (the network is still one network; only what "normal" means differs between
livestream frames and shop images), and each domain keeps its own running mean and variance.
In training each domain is normalised by its own batch's statistics, at test by its own
running statistics, so training and test agree (a shared BatchNorm run in two training calls
does not: it trains on per-side batch statistics and tests on a blend of both sides).

Use :func:`convert_domain_batchnorm` on a network once, then run each side under
:func:`batchnorm_domain`::

    convert_domain_batchnorm(net, SIDES)
    with batchnorm_domain(net, SHOP):
        features = net(images)
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

FRAME, SHOP = "frame", "shop"  # the two sides of video-to-shop retrieval
SIDES = (FRAME, SHOP)


class DomainBatchNorm2d(nn.Module):
    """BatchNorm2d with shared affine weights and one set of running statistics per domain."""

    def __init__(self, bn: nn.BatchNorm2d, domains: Sequence[str]) -> None:
        super().__init__()
        if not domains or len(set(domains)) != len(domains):
            raise ValueError(f"domain batchnorm: domains must be distinct names, got {list(domains)}")
        if not bn.track_running_stats:
            raise ValueError("domain batchnorm: the BatchNorm must track running statistics")
        self.domains = tuple(domains)
        self.active = self.domains[0]
        self.eps, self.momentum = bn.eps, bn.momentum
        self.weight = bn.weight
        self.bias = bn.bias
        n = len(self.domains)
        self.register_buffer("running_mean", bn.running_mean.detach().clone().expand(n, -1).contiguous())
        self.register_buffer("running_var", bn.running_var.detach().clone().expand(n, -1).contiguous())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone().expand(n).contiguous())

    def forward(self, x: Tensor) -> Tensor:
        i = self.domains.index(self.active)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked[i] += 1
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked[i])
        # the [i] rows are views: F.batch_norm updates this domain's statistics in place
        return F.batch_norm(x, self.running_mean[i], self.running_var[i], self.weight, self.bias,
                            self.training, momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.running_mean.shape[1]}, domains={self.domains}, eps={self.eps}, momentum={self.momentum}"


def convert_domain_batchnorm(module: nn.Module, domains: Sequence[str]) -> int:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`DomainBatchNorm2d`
    (same weights, its statistics copied to every domain); returns how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, DomainBatchNorm2d(child, domains))
            count += 1
        else:
            count += convert_domain_batchnorm(child, domains)
    return count


@contextlib.contextmanager
def batchnorm_domain(module: nn.Module, domain: str) -> Iterator[None]:
    """Run ``module``'s domain BatchNorms on ``domain``'s statistics inside the block."""
    layers = [m for m in module.modules() if isinstance(m, DomainBatchNorm2d)]
    for m in layers:
        if domain not in m.domains:
            raise ValueError(f"domain batchnorm: unknown domain {domain!r}, expected one of {m.domains}")
    saved = [m.active for m in layers]
    try:
        for m in layers:
            m.active = domain
        yield
    finally:
        for m, name in zip(layers, saved):
            m.active = name


def has_domain_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, DomainBatchNorm2d) for m in module.modules())


def domain_forward(module: nn.Module, domain: str, x: Tensor) -> Tensor:
    """``module(x)`` on ``domain``'s BatchNorm statistics (plain ``module(x)`` without them)."""
    with batchnorm_domain(module, domain):
        return module(x)
