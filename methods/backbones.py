"""CNN backbones from timm for the CNN baselines (FashionNet, AsymNet, NVAN, MGH).

``paper`` profiles load ImageNet weights through timm's hub tags (``resnet50.tv_in1k``,
``vgg16.tv_in1k``: torchvision's original weights, which the baselines' official code
used) or from a local ``torch.save`` state dict (``encoder.pretrained=PATH``, which the
command line's ``--pretrained PATH`` sets). Failing is an error naming the fix, never a silent
random start; random initialisation is asked for explicitly with ``pretrained=None`` (the
``tiny`` profiles, which have no weights offline).

ImageNet weights expect ImageNet's pixel normalisation, not the batch's CLIP one (``methods/base.py``):
``input_mean`` / ``input_std`` (set by the ``paper`` profiles to the weights' own, which
``tests/test_paper_profiles_config.py`` reads from timm's and torchvision's configs) make the
backbone's first convolution re-normalise its input; None keeps the batch's normalisation (the
randomly initialised ``tiny`` models, unchanged).

Narrow variants for the CPU profile keep timm's classes: ``timm`` ResNets take per-stage
``channels``; a VGG takes its layer list (``vgg_layers``, 'M' = 2x2 max-pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import timm
import torch
from timm.models.vgg import VGG
from torch import Tensor, nn

from benchmark.core.config import DataConfig
from methods.encoders import EncoderLoadError, read_state_dict
from methods.hub import is_local_weights, require_timm_weights

# torchvision's / timm's ImageNet normalisation (``ResNet50_Weights.IMAGENET1K_V1.transforms()``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# VGG-16's 13 convolutions at a quarter of the width (the CPU profile's "VGG-ish" trunk)
TINY_VGG_LAYERS = (16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M", 128, 128, 128, "M")


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "resnet50"  # a timm architecture
    # ImageNet weights: a timm hub tag of ``name`` (``tv_in1k`` -> ``resnet50.tv_in1k``) or the path
    # of a local ``torch.save`` state dict; None (or "none") = random init, asked for on purpose
    pretrained: Optional[str] = "tv_in1k"
    channels: Optional[tuple[int, ...]] = None  # ResNet stage widths (None: the architecture's)
    vgg_layers: Optional[tuple[Union[int, str], ...]] = None  # custom VGG layer list (None: ``name``)
    vgg_batchnorm: bool = False  # BatchNorm after each convolution of a custom VGG (as vgg16_bn)
    # pixel normalisation the weights were trained with (None: keep the batch's CLIP normalisation)
    input_mean: Optional[tuple[float, float, float]] = None
    input_std: Optional[tuple[float, float, float]] = None


def create_backbone(cfg: BackboneConfig, **kwargs: Any) -> nn.Module:
    """A timm model without its classifier (``num_classes=0``), weights per ``cfg.pretrained``,
    re-normalising its input to ``cfg.input_mean`` / ``cfg.input_std`` when they are set."""
    model = _create(cfg, **kwargs)
    if (cfg.input_mean is None) != (cfg.input_std is None):
        raise ValueError(f"backbone {cfg.name}: set both input_mean and input_std, or neither")
    if cfg.input_mean is not None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError(f"backbone {cfg.name}: no convolution to re-normalise the input of")
        first.register_forward_pre_hook(InputRenormalise(cfg.input_mean, cfg.input_std))
    return model


class InputRenormalise:
    """Forward pre-hook: pixels normalised with the batch's CLIP mean/std -> ``mean`` / ``std``.

    A hook on the first convolution (not a new module) leaves the state dict, and so local
    weight files and checkpoints, as they are."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:

        self.scale = torch.tensor([b / s for b, s in zip(DataConfig.std, std)]).view(3, 1, 1)
        self.shift = torch.tensor([(b - m) / s for b, m, s in zip(DataConfig.mean, mean, std)]).view(3, 1, 1)

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = args[0]
        return (x * self.scale.to(x) + self.shift.to(x),) + tuple(args[1:])


def _create(cfg: BackboneConfig, **kwargs: Any) -> nn.Module:

    kwargs = {"num_classes": 0, **kwargs}
    if cfg.channels is not None:
        kwargs["channels"] = tuple(int(c) for c in cfg.channels)
    spec = cfg.pretrained
    if spec is None or spec.strip().lower() in ("", "none", "random"):
        return _build(timm, cfg, kwargs)
    if is_local_weights(spec):
        model = _build(timm, cfg, kwargs)
        load_weights(model, Path(spec))
        return model
    if cfg.channels is not None or cfg.vgg_layers is not None:
        raise EncoderLoadError(
            f"backbone {cfg.name}: hub weights {spec!r} exist only for the standard widths; set "
            "encoder.pretrained=none (random init) or drop encoder.channels / encoder.vgg_layers"
        )
    tag = f"{cfg.name}.{spec}"
    fix = "pass a local state dict (--pretrained PATH) or ask for random init with encoder.pretrained=none"
    require_timm_weights(tag, f"ImageNet weights {tag!r}", fix)
    try:
        return timm.create_model(tag, pretrained=True, **kwargs)
    except Exception as exc:  # offline hub, unknown tag, corrupt cache
        raise EncoderLoadError(
            f"cannot load ImageNet weights {tag!r} through timm: {exc}. Pass a local state dict "
            "(--pretrained PATH, i.e. encoder.pretrained=PATH), run where the Hugging Face hub is "
            "reachable, or ask for random init explicitly with encoder.pretrained=none"
        ) from exc


def _build(timm: Any, cfg: BackboneConfig, kwargs: dict[str, Any]) -> nn.Module:
    if cfg.vgg_layers is not None:
        kwargs = {k: v for k, v in kwargs.items() if k != "channels"}
        if cfg.vgg_batchnorm:
            kwargs["norm_layer"] = nn.BatchNorm2d
        return VGG(cfg=list(cfg.vgg_layers), **kwargs)
    return timm.create_model(cfg.name, pretrained=False, **kwargs)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a ``torch.save`` state dict (tensors only) into a timm model; torchvision's VGG
    layout (``classifier.0`` / ``classifier.3`` linear fc6 / fc7) is converted to timm's
    convolutional ``pre_logits``. Missing keys are an error naming the file."""
    state = read_state_dict(path)
    if "classifier.0.weight" in state and hasattr(model, "pre_logits"):
        state = _torchvision_vgg_to_timm(state, model)
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise EncoderLoadError(f"encoder weights {path}: missing keys {missing[:5]}")


def _torchvision_vgg_to_timm(state: dict, model: nn.Module) -> dict:
    out = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    for tv, timm_name in (("classifier.0", "pre_logits.fc1"), ("classifier.3", "pre_logits.fc2")):
        target = model.get_submodule(timm_name).weight.shape
        out[f"{timm_name}.weight"] = state[f"{tv}.weight"].reshape(target)
        out[f"{timm_name}.bias"] = state[f"{tv}.bias"]
    return out


# --- ResNet helpers -------------------------------------------------------------------


def set_last_stride(resnet: nn.Module, stride: int = 1) -> None:
    """Make ``layer4`` keep the resolution (the re-id "last stride 1" trick): its first
    block's strided 3x3 convolution and shortcut convolution get ``stride``."""
    block = resnet.layer4[0]
    for mod in block.modules():
        if isinstance(mod, nn.Conv2d) and mod.stride == (2, 2):
            mod.stride = (stride, stride)


def resnet_stem(resnet: nn.Module, x: Tensor) -> Tensor:
    """conv1 -> bn1 -> act1 -> maxpool of a timm ResNet."""
    return resnet.maxpool(resnet.act1(resnet.bn1(resnet.conv1(x))))


def resnet_stages(resnet: nn.Module) -> list[nn.Sequential]:
    return [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]


def resnet_out_channels(resnet: nn.Module) -> int:
    return int(resnet.num_features)


def vgg_out_channels(vgg: nn.Module) -> int:
    convs = [m for m in vgg.features.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
