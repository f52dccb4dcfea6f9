"""The judge: a small CNN that reads colour, shape and background off a 64x64 image, and the
pixelation measure the style LoRA is judged by.

The judge is trained on the renderer's own images (train split; a third of them as 4x4-block pixel
art, all with light noise/blur so that decoded, slightly soft images read too) and its accuracy
on held-out renders (heldout split, plain and pixel-art) is reported beside every accuracy it
gives on generated images: a generated image is "right" when the judge reads the prompt's class.

Pixelation (`pixelation`): how much of an image's edge energy sits on one block grid (PixArFK's
8x8 by default). For each axis, the squared differences between neighbouring pixels are summed
per column (row) boundary; the best grid offset's share of that energy, e, is 1/block when edges
fall anywhere and 1 when every edge lies on the grid (pixel art, whose blocks are flat). The
score rescales it, (e - 1/block) / (1 - 1/block): about 0 for plain renders (edges anywhere), 1
for exact pixel art.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import world

HEADS = {"colour": len(world.COLOUR_NAMES), "shape": len(world.SHAPES), "background": len(world.COLOUR_NAMES)}
# Each head's class names, in logit order (world.Scene.labels' indices).
LABELS = {"colour": world.COLOUR_NAMES, "shape": world.SHAPES, "background": world.COLOUR_NAMES}
# How a micro prompt names each head's class, in words and as one pattern (named groups, read the
# same by Python's re and Rust's regex).
PROMPT_NAMES = {
    "colour": "the colour word just before the shape word",
    "shape": "the shape word",
    "background": 'the colour word just before " background"',
}
PROMPT_PATTERN = (
    rf"\b(?P<colour>{'|'.join(world.COLOUR_NAMES)}) (?P<shape>{'|'.join(world.SHAPES)})\b"
    rf".* on a (?P<background>{'|'.join(world.COLOUR_NAMES)}) background\b"
)


class Judge(nn.Module):
    """Input: float [N, 3, 64, 64] in [0, 1]. Output: dict of logits per head."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
            )

        self.features = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU(),  # 32x32
            block(w, w), nn.MaxPool2d(2),  # 16
            block(w, 2 * w), nn.MaxPool2d(2),  # 8
            block(2 * w, 3 * w), nn.MaxPool2d(2),  # 4
            block(3 * w, 4 * w),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(8 * w, n) for k, n in HEADS.items()})

    def forward(self, x):
        f = self.features(x * 2 - 1)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        return {k: h(pooled) for k, h in self.heads.items()}


class JudgeGraph(nn.Module):
    """The judge as its ONNX graph runs it: image [N, 3, 64, 64] in [0, 1] -> the logits of each
    head in HEADS' order (a tuple: ONNX outputs are positional)."""

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge

    def forward(self, image):
        logits = self.judge(image)
        return tuple(logits[k] for k in HEADS)


def read_prompt(prompt: str) -> dict | None:
    """The class each head should read for a micro prompt (PROMPT_PATTERN), or None."""
    import re

    m = re.search(PROMPT_PATTERN, prompt)
    return None if m is None else {k: m.group(k) for k in HEADS}


def to_tensor(images: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light noise and blur (decoded images are a little soft and grainy)."""
    n = x.shape[0]
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * 0.06
    x = x + torch.randn(x.shape, generator=gen) * sigma
    blur = torch.rand(n, generator=gen) < 0.3
    if blur.any():
        k = torch.tensor([0.25, 0.5, 0.25])
        k2 = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    return x.clamp(0, 1)


def loss_fn(logits: dict, labels: torch.Tensor) -> torch.Tensor:
    return sum(F.cross_entropy(logits[k], labels[:, i]) for i, k in enumerate(HEADS))


@torch.no_grad()
def predict(judge: Judge, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Predicted classes [N, 3] (colour, shape, background) for uint8 images [N, 64, 64, 3]."""
    judge.eval()
    device = next(judge.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        logits = judge(to_tensor(images[i : i + batch], device))
        out.append(torch.stack([logits[k].argmax(1) for k in HEADS], 1).cpu())
    return torch.cat(out).numpy()


def accuracy(pred: np.ndarray, labels: np.ndarray) -> dict:
    return {k: float((pred[:, i] == labels[:, i]).mean()) for i, k in enumerate(HEADS)}


def pixelation(images: np.ndarray, block: int = world.STYLE_BLOCK) -> np.ndarray:
    """Grid-edge concentration per image (see the module doc): ~0 plain, 1 exact pixel art.
    images: uint8 or float [N, H, W, C] (or one [H, W, C]); returns float [N] (or a float)."""
    single = images.ndim == 3
    x = np.asarray(images, dtype=np.float64)
    if single:
        x = x[None]
    dx = ((x[:, :, 1:] - x[:, :, :-1]) ** 2).sum(axis=(1, 3))  # [N, W-1]: boundary j | j+1
    dy = ((x[:, 1:] - x[:, :-1]) ** 2).sum(axis=(2, 3))  # [N, H-1]

    def best(e):
        j = np.arange(e.shape[1])
        on = np.stack([e[:, (j + 1 - o) % block == 0].sum(1) for o in range(block)], 1)
        return on.max(1)

    total = dx.sum(1) + dy.sum(1)
    share = (best(dx) + best(dy)) / np.maximum(total, 1e-12)
    score = (share - 1.0 / block) / (1.0 - 1.0 / block)
    score = np.where(total > 1e-9 * x.shape[1] * x.shape[2], score, 0.0)
    return float(score[0]) if single else score
