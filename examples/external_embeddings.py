"""A model trained and run outside the harness, in plain PyTorch, its embeddings written for
``run_benchmark.py evaluate`` (docs/external.md walks through it).

What a researcher with their own code does: train a model on the training pairs, encode every
test clip and every gallery image, save ``query.npz`` and ``gallery.npz`` (arrays ``ids`` and
``embeddings``). Here the model is a tiny CNN trained for a few steps with a symmetric InfoNCE
loss; a clip's embedding is the mean of its frames'. The harness is used only to list the files
(its dataset loader gives each clip's frame paths and each image's path, as the release's
annotation files would); the model, its training and its encoding are plain PyTorch.

    python examples/external_embeddings.py --dataset lpr4m-synth --out runs/external-demo
    python run_benchmark.py evaluate --dataset lpr4m-synth \\
        --query-embeddings runs/external-demo/query.npz --gallery-embeddings runs/external-demo/gallery.npz \\
        --method-name tiny-cnn-outside --paper https://example.org/tiny-cnn --recipe "..."

Clips given as frame files (the LPR4M layout) are read; clips given as videos (MovingFashion)
are not, to keep the example short.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the loader lists the files
from benchmark.core.registry import DATASETS, load_builtin_datasets  # noqa: E402

SIZE = 64  # pixels a side
FRAMES = 4  # frames per clip, evenly spaced


def load(path: Path) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((SIZE, SIZE))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def clip_frames(clip) -> list[Path]:
    if not clip.frame_paths:
        raise SystemExit(f"clip {clip.clip_id}: this example reads frame files only (not videos)")
    pick = np.linspace(0, len(clip.frame_paths) - 1, min(FRAMES, len(clip.frame_paths))).round().astype(int)
    return [clip.frame_paths[i] for i in pick]


def one_frame(clip, gen: torch.Generator) -> Path:
    frames = clip_frames(clip)
    return frames[int(torch.randint(len(frames), (1,), generator=gen))]


class TinyCNN(nn.Module):
    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 5, 2, 2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


def train(model: TinyCNN, pairs: list, steps: int, batch: int, gen: torch.Generator) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        idx = torch.randint(len(pairs), (batch,), generator=gen).tolist()
        frames = torch.stack([load(one_frame(pairs[i].clip, gen)) for i in idx])
        images = torch.stack([load(pairs[i].image_path) for i in idx])
        logits = model(frames) @ model(images).T / 0.07
        target = torch.arange(batch)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps}: loss {loss.item():.3f}")


@torch.no_grad()
def encode(model: TinyCNN, splits) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    model.eval()
    queries = [q for q in splits.queries if not q.missing]  # a clip without frames is a miss: not given
    q_emb = torch.stack([model(torch.stack([load(p) for p in clip_frames(q.clip)])).mean(0) for q in queries])
    images = list({g.image_id: g for g in splits.gallery}.values())  # one embedding per image id
    g_emb = torch.cat(
        [model(torch.stack([load(g.image_path) for g in images[i : i + 64]])) for i in range(0, len(images), 64)]
    )
    return ([q.query_id for q in queries], q_emb.numpy()), ([g.image_id for g in images], g_emb.numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="lpr4m-synth")
    ap.add_argument("--synth-size", default="default", choices=("tiny", "default"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    load_builtin_datasets()
    splits = DATASETS.get(args.dataset)(None, size=args.synth_size, seed=0)
    model = TinyCNN()
    train(model, splits.train, args.steps, args.batch, gen)
    (q_ids, q_emb), (g_ids, g_emb) = encode(model, splits)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "query.npz", ids=np.array(q_ids), embeddings=q_emb)
    np.savez(args.out / "gallery.npz", ids=np.array(g_ids), embeddings=g_emb)
    print(f"wrote {args.out / 'query.npz'} {q_emb.shape} and {args.out / 'gallery.npz'} {g_emb.shape}")


if __name__ == "__main__":
    main()
