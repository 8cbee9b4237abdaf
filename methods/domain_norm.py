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


_INPUT_DIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


class DomainBatchNorm(nn.Module):
    """A BatchNorm (1d, 2d or 3d) with shared affine weights and one set of running statistics
    per domain."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, domains: Sequence[str]) -> None:
        super().__init__()
        if not domains or len(set(domains)) != len(domains):
            raise ValueError(f"domain batchnorm: domains must be distinct names, got {list(domains)}")
        if not bn.track_running_stats:
            raise ValueError("domain batchnorm: the BatchNorm must track running statistics")
        self.domains = tuple(domains)
        self.active = self.domains[0]
        self.eps, self.momentum = bn.eps, bn.momentum
        dims = [d for kind, d in _INPUT_DIMS.items() if isinstance(bn, kind)]
        if not dims:
            raise ValueError(f"domain batchnorm: expected a BatchNorm1d, 2d or 3d, got {type(bn).__name__}")
        self.input_dims = dims[0]
        self.weight = bn.weight
        self.bias = bn.bias
        n = len(self.domains)
        self.register_buffer("running_mean", bn.running_mean.detach().clone().expand(n, -1).contiguous())
        self.register_buffer("running_var", bn.running_var.detach().clone().expand(n, -1).contiguous())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone().expand(n).contiguous())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in self.input_dims:
            raise ValueError(
                f"domain batchnorm: expected a {' or '.join(map(str, self.input_dims))}-d input, got {x.dim()}-d"
            )
        i = self.domains.index(self.active)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked[i] += 1
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked[i])
        # the [i] rows are views: F.batch_norm updates this domain's statistics in place
        return F.batch_norm(
            x, self.running_mean[i], self.running_var[i], self.weight, self.bias, self.training, momentum, self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.running_mean.shape[1]}, domains={self.domains}, eps={self.eps}, momentum={self.momentum}"


def convert_domain_batchnorm(module: nn.Module, domains: Sequence[str], exclude: Sequence[nn.Module] = ()) -> int:
    """Replace every ``nn.BatchNorm1d/2d/3d`` inside ``module`` by a :class:`DomainBatchNorm`
    (same weights, its statistics copied to every domain), leaving the submodules in
    ``exclude`` (and what they hold) as they are; returns how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if any(child is m for m in exclude):
            continue
        if type(child) in _INPUT_DIMS:
            setattr(module, name, DomainBatchNorm(child, domains))
            count += 1
        else:
            count += convert_domain_batchnorm(child, domains, exclude)
    return count


@contextlib.contextmanager
def batchnorm_domain(module: nn.Module, domain: str) -> Iterator[None]:
    """Run ``module``'s domain BatchNorms on ``domain``'s statistics inside the block."""
    layers = [m for m in module.modules() if isinstance(m, DomainBatchNorm)]
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
    return any(isinstance(m, DomainBatchNorm) for m in module.modules())


def domain_forward(module: nn.Module, domain: str, x: Tensor) -> Tensor:
    """``module(x)`` on ``domain``'s BatchNorm statistics (plain ``module(x)`` without them)."""
    with batchnorm_domain(module, domain):
        return module(x)
