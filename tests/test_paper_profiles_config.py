"""Paper profiles build their networks as their named weights were trained (no weights needed).

Each check reads the weight provider's own configuration (open_clip's pretrained config,
torchvision's ``weights.transforms()``, timm's ``pretrained_cfg``) and compares it with what
the paper profile builds or feeds the network: activation, pixel mean/std, image and resize
sizes. Models are built at random initialisation (``pretrained=None``), so nothing downloads.
"""

from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from benchmark.core.config import get_profile
from methods.backbones import BackboneConfig, create_backbone
from methods.base import DataInfo, build_method
from methods.encoders import PAPER_ENCODER, TINY_ENCODER, ClipEncoder, EncoderConfig, EncoderLoadError, build_clip

PAPER_DATA = get_profile("paper").data


def _activations(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, (QuickGELU, nn.GELU))}


def test_paper_clip_activation_and_sizes_are_the_openai_weights_own():
    tag = open_clip.get_pretrained_cfg(PAPER_ENCODER.model_name, PAPER_ENCODER.pretrained)
    arch = open_clip.get_model_config(PAPER_ENCODER.model_name)
    assert tag["quick_gelu"] is True  # open_clip 3.3.0: the openai weights were trained with QuickGELU
    assert PAPER_ENCODER.quick_gelu is tag["quick_gelu"]
    # every block of both OpenAI towers (the paper profile's text tower is Chinese-CLIP's BERT)
    encoder = ClipEncoder(dataclasses.replace(PAPER_ENCODER, pretrained=None, text_tower="openai-clip"), with_text=True)
    assert _activations(encoder) == {QuickGELU}  # vision and text towers, every block
    assert tuple(PAPER_DATA.mean) == pytest.approx(tag["mean"], abs=1e-8)
    assert tuple(PAPER_DATA.std) == pytest.approx(tag["std"], abs=1e-8)
    assert PAPER_ENCODER.image_size == PAPER_DATA.image_size == arch["vision_cfg"]["image_size"]
    assert encoder.grid == arch["vision_cfg"]["image_size"] // arch["vision_cfg"]["patch_size"] == 7


def test_paper_resize_is_the_official_ricecode_not_clips_own():
    """RICE's official eval transform is Resize(256, 256) + CenterCrop(224) with CLIP weights
    (``mmf/configs/datasets/videotoshop/defaults.yaml``); CLIP's own is a 224 resize, which
    the official code did not use. The profile follows the code that produced the numbers."""
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    assert tag["resize_mode"] == "shortest"
    assert (PAPER_DATA.resize_size, PAPER_DATA.image_size) == (256, 224)


@pytest.mark.parametrize("method", ["rice", "clip-meanpool"])
def test_paper_methods_build_their_clip_with_quickgelu(method):
    import methods.clip_meanpool  # noqa: F401
    import methods.rice  # noqa: F401
    from benchmark.core.registry import METHODS

    info = DataInfo(num_products=10, num_categories=2, num_frames=2, image_size=224)
    overrides = {"encoder.pretrained": None, "encoder.text_pretrained": None}
    if method == "rice":
        overrides.update({"require_pretrained": False, "ipd": "none"})
    model = build_method(METHODS.get(method), "paper", info, overrides)
    assert _activations(model) == {QuickGELU}
    if method == "rice":  # the PMD layers are copies of the encoder's last two blocks
        assert _activations(model.pmd) == {QuickGELU}


def test_a_hub_tag_with_the_wrong_activation_is_refused_before_loading():
    with pytest.raises(EncoderLoadError, match="trained with QuickGELU; set encoder.quick_gelu=true"):
        build_clip(EncoderConfig(pretrained="openai", quick_gelu=False))


def test_tiny_clip_keeps_gelu():
    encoder = ClipEncoder(TINY_ENCODER, with_text=True)
    assert _activations(encoder) == {nn.GELU}
    assert TINY_ENCODER.quick_gelu is False


# --- the CNN and video baselines ----------------------------------------------------------


def _paper_backbone(module_name: str) -> BackboneConfig:
    import importlib

    return importlib.import_module(f"methods.{module_name}").PAPER.encoder


@pytest.mark.parametrize(
    "module_name, weights_enum",
    [
        ("nvan", "ResNet50_Weights"),
        ("mgh", "ResNet50_Weights"),
        ("asymnet", "VGG16_Weights"),
        ("fashionnet", "VGG16_Weights"),
    ],
)
def test_cnn_baselines_normalise_as_their_imagenet_weights(module_name, weights_enum):
    import timm
    import torchvision.models as tvm

    enc = _paper_backbone(module_name)
    assert enc.pretrained == "tv_in1k"
    timm_cfg = timm.models.get_pretrained_cfg(f"{enc.name}.{enc.pretrained}")
    tv = getattr(tvm, weights_enum).IMAGENET1K_V1.transforms()
    assert enc.input_mean == pytest.approx(timm_cfg.mean) and enc.input_std == pytest.approx(timm_cfg.std)
    assert enc.input_mean == pytest.approx(tuple(tv.mean)) and enc.input_std == pytest.approx(tuple(tv.std))
    assert PAPER_DATA.resize_size == tv.resize_size[0] and PAPER_DATA.image_size == tv.crop_size[0]
    assert round(timm_cfg.input_size[-1] / timm_cfg.crop_pct) == PAPER_DATA.resize_size


def test_video_swin_normalises_as_its_kinetics_weights():
    from torchvision.models.video import Swin3D_B_Weights

    from methods.video_swin import PAPER

    tv = Swin3D_B_Weights[PAPER.pretrained].transforms()
    assert PAPER.input_mean == pytest.approx(tuple(tv.mean)) and PAPER.input_std == pytest.approx(tuple(tv.std))
    assert PAPER_DATA.resize_size == tv.resize_size[0] and PAPER_DATA.image_size == tv.crop_size[0]


def test_seam_normalises_as_torchvisions_mask_rcnn():
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from methods.seam_detector import IMAGENET_MEAN, IMAGENET_STD

    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).transform
    assert list(IMAGENET_MEAN) == pytest.approx(reference.image_mean)
    assert list(IMAGENET_STD) == pytest.approx(reference.image_std)


def test_backbone_renormalises_the_clip_batch_to_its_weights_mean_std():
    """The first convolution sees (pixels - mean) / std of the weights, not CLIP's batch."""
    cfg = BackboneConfig(
        name="resnet18",
        pretrained=None,
        channels=(8, 16, 32, 64),
        input_mean=(0.485, 0.456, 0.406),
        input_std=(0.229, 0.224, 0.225),
    )
    torch.manual_seed(0)
    model = create_backbone(cfg)
    seen = {}

    def record(module, args, out):
        seen["x"] = args[0]

    model.conv1.register_forward_hook(record)
    pixels = torch.rand(2, 3, 32, 32)
    clip_mean, clip_std = torch.tensor(PAPER_DATA.mean).view(3, 1, 1), torch.tensor(PAPER_DATA.std).view(3, 1, 1)
    model(((pixels - clip_mean) / clip_std))
    expected = (pixels - torch.tensor(cfg.input_mean).view(3, 1, 1)) / torch.tensor(cfg.input_std).view(3, 1, 1)
    assert torch.allclose(seen["x"], expected, atol=1e-5)
    plain = create_backbone(dataclasses.replace(cfg, input_mean=None, input_std=None))
    assert set(plain.state_dict()) == set(model.state_dict())  # a hook, no new parameters or buffers


# --- the training recipe behind the reported rows -----------------------------------------


def test_paper_recipe_is_the_official_lpr750k_run():
    """``projects/videotoshop/configs/e2e_pretraining_vic*.yaml`` (AdamW lr 1e-6, eps 1e-6,
    weight decay 0.2, lr_multiplier 100, warmup_cosine 500 / 5000, max_updates 5000, fp16,
    clip_gradients false) and the README's global batch of 128 on LPR4M."""
    t = get_profile("paper").train
    assert (t.updates, round(t.warmup_ratio * t.updates), t.batch_size) == (5000, 500, 128)
    assert (t.lr_encoder, t.lr_new, t.weight_decay, t.adam_eps) == (1e-6, 1e-4, 0.2, 1e-6)
    assert t.grad_clip == 0.0 and t.amp is True
    assert get_profile("paper").data.num_frames == 10


def test_tiny_recipe_is_unchanged():
    """The committed tiny rows were trained with these; they must not need a rerun."""
    t = get_profile("tiny").train
    assert (t.epochs, t.batch_size, t.grad_clip, t.adam_eps, t.updates) == (4, 32, 1.0, 1e-8, None)


def test_engine_uses_adam_eps_and_a_schedule_in_updates(tmp_path):
    from benchmark.core.config import TrainConfig
    from benchmark.training import engine
    from benchmark.training.distributed import DistEnv
    from tests.toy_methods import RegressionData, ToyRegression

    cfg = TrainConfig(
        epochs=1,
        updates=7,
        batch_size=8,
        lr_encoder=1e-2,
        lr_new=1e-2,
        weight_decay=0.0,
        warmup_ratio=0.0,
        grad_clip=0.0,
        adam_eps=1e-6,
        amp=False,
    )
    torch.manual_seed(0)
    model = ToyRegression()
    assert {g["eps"] for g in engine.build_optimizer(model, cfg).param_groups} == {1e-6}
    res = engine.train(model, RegressionData(32), cfg, env=DistEnv(), run_dir=tmp_path, show_progress=False)
    # 4 updates per epoch: 7 updates take two epochs, the second stopped after 3
    assert (res.steps, res.total_steps) == (7, 7)
    assert [h["step"] for h in res.history] == [4, 7]
