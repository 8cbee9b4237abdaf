"""``run_benchmark.py visualize``: a method's attention over a query clip, as PNG overlays.

    run_benchmark.py visualize --method rice --dataset lpr4m-synth --checkpoint RUN/last.pt \\
        --query QUERY_ID --out DIR [--data-root DIR] [--gallery-id IMAGE_ID]

Loads the trained method from a checkpoint written by the training engine (its profile,
``--set`` overrides and synthetic size are read from the ``config.json`` beside it unless given
here), encodes the query clip and a shop image (the query's first ground truth unless
``--gallery-id``), asks the method for ``cross_attention_maps(query_batch, gallery_batch)``
(``[T, grid, grid]``; RICE: PMD's cross-attention from the image's pooled token), and writes

* ``<query>_attention.png``: the shop image beside every real frame with its heat map (and
  the intent-product box IPD masks with, when the method reports one);
* ``<query>_frame<t>.png``: each frame's overlay alone.

Files are written atomically. Exit status 0 on success, 1 on a bad query, checkpoint or
method (one ``error:`` line on stderr).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from benchmark.cli.args import add_plugin_argument, load_registries, parse_overrides, whole_weights_overrides
from benchmark.cli.run_setup import SYNTH_DATA_SEED, data_info
from benchmark.core.atomic import atomic_write_bytes
from benchmark.core.config import RunConfig, get_profile
from benchmark.core.registry import DATASETS, METHODS
from benchmark.training.checkpoint import CheckpointError, load_model_weights
from benchmark.training.distributed import resolve_device
from benchmark.training.engine import to_device
from datasets.torch_data import GalleryDataset, QueryDataset, collate_batch
from methods.base import build_method, overrides_hook


class VisualizeError(RuntimeError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="a registered method with cross_attention_maps (e.g. rice)")
    p.add_argument("--dataset", required=True, help="the dataset the query comes from")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (synthetic sets: the cache)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (RUN_DIR/last.pt)")
    p.add_argument("--query", required=True, help="the query clip id")
    p.add_argument("--out", type=Path, required=True, help="output folder for the PNGs")
    p.add_argument("--gallery-id", default=None, help="shop image to attend from (default: the first ground truth)")
    p.add_argument("--profile", default=None, help="profile (default: the run's, from config.json)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="method config overrides (default: the run's, from config.json)",
    )
    p.add_argument(
        "--synth-size",
        default=None,
        choices=("tiny", "default"),
        help="synthetic dataset size (default: the run's, from config.json)",
    )
    add_plugin_argument(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")


def main(args: argparse.Namespace) -> int:
    try:
        paths = render(args)
    except VisualizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


# --- loading -------------------------------------------------------------------------------


def _run_config(checkpoint: Path) -> dict[str, Any]:
    """The run's ``config.json`` beside the checkpoint ({} if there is none)."""
    path = checkpoint.parent / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VisualizeError(f"{path}: unreadable run config ({exc})") from exc
    run = data.get("run") if isinstance(data, dict) else None
    return run if isinstance(run, dict) else {}


def _settings(args: argparse.Namespace) -> tuple[str, dict[str, Any], str]:
    run = _run_config(args.checkpoint)
    profile = args.profile or (run.get("profile") or {}).get("name") or "tiny"
    if args.overrides is not None:
        overrides: dict[str, Any] = parse_overrides(args.overrides)
    else:
        overrides = dict(run.get("method_overrides") or {})
    synth_size = args.synth_size or run.get("synth_size") or "default"
    return profile, overrides, synth_size


def _load(args: argparse.Namespace):

    load_registries(args.plugins)
    profile_name, overrides, synth_size = _settings(args)
    cls = METHODS.get(args.method)
    if not overrides_hook(cls, "cross_attention_maps"):
        raise VisualizeError(f"method {args.method!r} has no cross_attention_maps(); visualize needs one (e.g. rice)")
    profile = get_profile(profile_name)
    splits = DATASETS.get(args.dataset)(args.data_root, size=synth_size, seed=SYNTH_DATA_SEED)
    cfg = RunConfig(
        method=args.method,
        dataset=args.dataset,
        profile=profile,
        data_root=args.data_root,
        method_overrides=overrides,
        synth_size=synth_size,
    )
    info, _, _ = data_info(splits, cfg)
    overrides = whole_weights_overrides(cls, profile.name, overrides)  # the checkpoint holds every weight
    try:
        method = build_method(cls, profile.name, info, overrides)
        load_model_weights(method, args.checkpoint)
    except CheckpointError as exc:
        raise VisualizeError(str(exc)) from exc
    except (KeyError, ValueError, RuntimeError) as exc:
        raise VisualizeError(f"{args.checkpoint}: does not fit {args.method} ({exc})") from exc
    device = resolve_device(args.device)
    return method.to(device).eval(), splits, profile.data, device


def _pick(splits, query_id: str, gallery_id: Optional[str]):
    query = next((q for q in splits.queries if q.query_id == query_id), None)
    if query is None:
        raise VisualizeError(f"query {query_id!r} is not in {splits.name}'s test split")
    if query.missing:
        raise VisualizeError(f"query {query_id!r}: its clip is missing from the release")
    wanted = gallery_id or (query.gt_ids[0] if query.gt_ids else None)
    item = next((g for g in splits.gallery if g.image_id == wanted), None)
    if item is None:
        raise VisualizeError(f"gallery image {wanted!r} is not in {splits.name}'s gallery")
    return query, item


# --- rendering -----------------------------------------------------------------------------


def render(args: argparse.Namespace) -> list[Path]:
    """Compute the maps and write the PNGs; returns the written paths."""

    method, splits, data_cfg, device = _load(args)
    query, item = _pick(splits, args.query, args.gallery_id)
    q_batch = to_device(collate_batch([QueryDataset([query], data_cfg)[0]]), device, data_cfg)
    g_batch = to_device(collate_batch([GalleryDataset([item], data_cfg)[0]]), device, data_cfg)
    with torch.no_grad():
        maps = method.cross_attention_maps(q_batch, g_batch).float().cpu()
        boxes = found = None
        predicted = method.intent_boxes(q_batch)
        if predicted is not None:
            boxes, found = (t[0].cpu() for t in predicted)
    frame_mask = q_batch["frame_mask"][0].cpu()
    frames = _to_rgb(q_batch["frames"][0].cpu(), data_cfg)
    shop = _to_rgb(g_batch["image"].cpu(), data_cfg)[0]
    out = Path(args.out)
    stem = _safe(args.query)
    title = f"{args.method}: query {args.query} vs shop image {item.image_id}"
    written = [_save(out / f"{stem}_attention.png", _figure(frames, maps, frame_mask, shop, boxes, found, title))]
    for t in range(frames.shape[0]):
        if frame_mask[t]:
            fig = _figure(
                frames[t : t + 1],
                maps[t : t + 1],
                frame_mask[t : t + 1],
                None,
                None if boxes is None else boxes[t : t + 1],
                None if found is None else found[t : t + 1],
                f"frame {t}",
            )
            written.append(_save(out / f"{stem}_frame{t}.png", fig))
    return written


def _to_rgb(x: Tensor, data_cfg) -> Tensor:
    mean = torch.tensor(data_cfg.mean).view(3, 1, 1)
    std = torch.tensor(data_cfg.std).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).movedim(-3, -1)  # [..., H, W, 3]


def _figure(
    frames: Tensor,
    maps: Tensor,
    frame_mask: Tensor,
    shop: Optional[Tensor],
    boxes: Optional[Tensor],
    found: Optional[Tensor],
    title: str,
):
    # heavy, and its backend must be chosen before pyplot is imported
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    real = [t for t in range(frames.shape[0]) if frame_mask[t]]
    panels = (1 if shop is not None else 0) + len(real)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(2.6 * max(panels, 1), 3.0), squeeze=False)
    axes = list(axes[0])
    if shop is not None:
        ax = axes.pop(0)
        ax.imshow(shop.numpy())
        ax.set_title("shop image", fontsize=8)
        ax.axis("off")
    vmax = float(maps.max()) or 1.0
    for ax, t in zip(axes, real):
        img = frames[t].numpy()
        h, w = img.shape[:2]
        ax.imshow(img)
        ax.imshow(
            maps[t].numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=vmax, extent=(0, w, h, 0), interpolation="bilinear"
        )
        if boxes is not None and found is not None and bool(found[t]):
            x1, y1, x2, y2 = (boxes[t] * torch.tensor([w, h, w, h])).tolist()
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=1.2))
        ax.set_title(f"frame {t}  ({float(maps[t].sum()):.2f})", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _save(path: Path, fig) -> Path:
    import matplotlib.pyplot as plt  # noqa: PLC0415  (after _figure chose the backend)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "query"
