"""The synthetic world the micro model learns: one coloured shape on a coloured background.

A scene is drawn from a small grammar and rendered at 64x64 with anti-aliasing (drawn at 4x with
PIL, then box-filtered down). Everything is a pure function of (split, index): the same scene, the
same pixels, the same caption on every machine.

    a large yellow star on the right on a blue background at sunset
    ^ size  ^ colour ^ shape ^ position        ^ background  ^ gradient

Design (the issue's experiment was undertrained on shape and background, so the world is made
easier to learn than it was):
- few, well separated classes: 6 saturated colours (the background uses the same names, never
  the shape's own colour), 4 shapes with different silhouettes (circle, square, triangle, star);
- large shapes: "small" is a radius of 20 % of the image, "large" 30 %, so a shape spans 8-12 of
  the 16x16 latent pixels;
- a balanced sampler: (colour, shape, background) runs through a seeded permutation of all 120
  combinations, so every combination comes once per 120 scenes of a split; size, position and
  sunset are drawn uniformly;
- captions sometimes leave out the size or the position (the scene still has one), so a short
  prompt like "a red circle on a blue background" is in distribution;
- splits by seed: "train" and "heldout" draw from different seed streams.

`pixel_art` turns a render into pixel art: `block`x`block` blocks sampled nearest-neighbour,
reduced to a 6-colour palette, upscaled nearest-neighbour. Two block sizes are used:
- PixArFK, the style LoRA's style: 8x8 blocks (2x2 latent pixels), an 8x8-block sprite. The VAE
  (trained before the style existed, with its encoder fixed since) reconstructs 8x8 blocks'
  edges sharply enough to be measured (pixelation 0.41 on held-out PixArFK renders, 0.13 on
  plain ones); 4x4 blocks, one latent pixel each, came back at 0.24 against 0.11, too little for
  any style LoRA to show through.
- 4x4 blocks (one latent pixel each): a quarter of the VAE's and a third of the judge's training
  images, so that hard, grid-aligned edges are in their data.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4
TRIGGER = "PixArFK"
STYLE_BLOCK = 8  # PixArFK's block in image pixels (2x2 latent pixels)
AUGMENT_BLOCK = 4  # the VAE's and judge's blocky renders (one latent pixel per block)
PIXEL_COLOURS = 6

COLOURS = {
    "red": (220, 38, 38),
    "yellow": (245, 210, 30),
    "green": (34, 160, 60),
    "blue": (40, 80, 225),
    "purple": (140, 55, 190),
    "white": (242, 242, 242),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.20, "large": 0.30}  # radius as a fraction of the image side
POSITIONS = {"on the left": 0.34, "in the middle": 0.50, "on the right": 0.66}  # centre x fraction
SUNSET_TINT = (255, 120, 40)

COLOUR_NAMES = tuple(COLOURS)
SIZE_NAMES = tuple(SIZES)
POSITION_NAMES = tuple(POSITIONS)

# Seed streams of the splits (numpy SeedSequence entropy).
SPLITS = {"train": 0x5EED_0001, "heldout": 0x5EED_0002}
P_OMIT_SIZE = 0.15
P_OMIT_POSITION = 0.25
P_SUNSET = 0.3

# Every (colour, shape, background) with background != colour: 6 * 4 * 5 = 120.
COMBOS = tuple(
    (c, s, b) for c in COLOUR_NAMES for s in SHAPES for b in COLOUR_NAMES if b != c
)


@dataclasses.dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    size: str
    position: str
    sunset: bool
    # continuous jitter (not in the caption)
    dx: float  # pixels
    dy: float
    rotation: float  # degrees
    tint: tuple  # per-channel colour jitter added to the shape colour
    # what the caption names
    say_size: bool = True
    say_position: bool = True

    def caption(self, trigger: bool = False) -> str:
        words = ["a"]
        if self.say_size:
            words.append(self.size)
        words += [self.colour, self.shape]
        if self.say_position:
            words.append(self.position)
        words += ["on a", self.background, "background"]
        if self.sunset:
            words.append("at sunset")
        text = " ".join(words)
        return f"{text}, {TRIGGER}" if trigger else text

    def labels(self) -> tuple[int, int, int]:
        """Class indices (colour, shape, background) for the judge."""
        return COLOUR_NAMES.index(self.colour), SHAPES.index(self.shape), COLOUR_NAMES.index(self.background)


def scene(split: str, index: int, full_caption: bool = False) -> Scene:
    """Scene `index` of `split`; deterministic. `full_caption`: the caption names every attribute."""
    base = SPLITS[split]
    epoch, slot = divmod(index, len(COMBOS))
    perm = np.random.default_rng([base, 0, epoch]).permutation(len(COMBOS))
    colour, shape, background = COMBOS[perm[slot]]
    rng = np.random.default_rng([base, 1, index])
    size = SIZE_NAMES[rng.integers(len(SIZE_NAMES))]
    position = POSITION_NAMES[rng.integers(len(POSITION_NAMES))]
    sunset = bool(rng.random() < P_SUNSET)
    dx, dy = (float(v) for v in rng.uniform(-2.0, 2.0, size=2))
    rotation = float(rng.uniform(-12.0, 12.0))
    tint = tuple(int(v) for v in rng.integers(-12, 13, size=3))
    say_size = bool(rng.random() >= P_OMIT_SIZE)
    say_position = bool(rng.random() >= P_OMIT_POSITION)
    if full_caption:
        say_size = say_position = True
    return Scene(colour, shape, background, size, position, sunset, dx, dy, rotation, tint, say_size, say_position)


def _regular_polygon(cx, cy, radius, n, rotation_deg, start_deg=-90.0, inner=None):
    pts = []
    k = 2 * n if inner is not None else n
    for i in range(k):
        ang = math.radians(start_deg + rotation_deg + 360.0 * i / k)
        r = radius if inner is None or i % 2 == 0 else inner
        pts.append((cx + r * math.cos(ang), cy + r * math.sin(ang)))
    return pts


def _clip8(c) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(v)))) for v in c)


def _background(sc: Scene, size: int) -> Image.Image:
    bg = np.array(COLOURS[sc.background], dtype=np.float32)
    if not sc.sunset:
        return Image.new("RGB", (size, size), _clip8(bg))
    top = 0.5 * bg + 0.5 * np.array(SUNSET_TINT, dtype=np.float32)
    bottom = 0.62 * bg
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    grad = (1 - t) * top + t * bottom  # [size, 1, 3]
    arr = np.broadcast_to(grad, (size, size, 3))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def render(sc: Scene, size: int = IMAGE_SIZE, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The scene as uint8 [size, size, 3], anti-aliased by drawing at `supersample`x and
    box-filtering down."""
    big = size * supersample
    img = _background(sc, big)
    draw = ImageDraw.Draw(img)
    colour = _clip8(np.array(COLOURS[sc.colour]) + np.array(sc.tint))
    s = big / IMAGE_SIZE  # image pixels -> big pixels
    cx = POSITIONS[sc.position] * big + sc.dx * s
    cy = 0.5 * big + sc.dy * s
    r = SIZES[sc.size] * big
    if sc.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif sc.shape == "square":
        # the same area as the circle: half side r * sqrt(pi) / 2
        half = r * math.sqrt(math.pi) / 2
        draw.polygon(_regular_polygon(cx, cy, half * math.sqrt(2), 4, sc.rotation, start_deg=45.0), fill=colour)
    elif sc.shape == "triangle":
        pts = _regular_polygon(cx, cy + 0.15 * r, 1.25 * r, 3, sc.rotation)
        draw.polygon(pts, fill=colour)
    elif sc.shape == "star":
        outer = 1.2 * r
        draw.polygon(_regular_polygon(cx, cy + 0.05 * r, outer, 5, sc.rotation, inner=0.48 * outer), fill=colour)
    else:
        raise ValueError(f"unknown shape {sc.shape!r}")
    if supersample > 1:
        img = img.reduce(supersample)
    return np.asarray(img, dtype=np.uint8).copy()


def pixel_art(image: np.ndarray, block: int = STYLE_BLOCK, colours: int = PIXEL_COLOURS) -> np.ndarray:
    """Pixel art of an image (PixArFK by default): nearest-neighbour down to one pixel per `block`x`block`
    block, an adaptive `colours`-colour palette (median cut, no dithering), nearest-neighbour back
    up. uint8 [H, W, 3] -> same shape; every block is one flat colour."""
    h, w, _ = image.shape
    small = Image.fromarray(image, "RGB").resize((w // block, h // block), Image.Resampling.NEAREST)
    small = small.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST), dtype=np.uint8).copy()


def render_batch(split: str, start: int, count: int, style: bool = False) -> tuple[np.ndarray, list[Scene]]:
    """Scenes start..start+count-1 of `split`: images uint8 [count, 64, 64, 3] and the scenes."""
    scenes = [scene(split, i) for i in range(start, start + count)]
    imgs = np.stack([render(sc) for sc in scenes])
    if style:
        imgs = np.stack([pixel_art(im) for im in imgs])
    return imgs, scenes


def vocabulary_texts() -> list[str]:
    """Texts covering every word a caption can hold (for vocabulary trimming and its tests)."""
    texts = ["", TRIGGER, f"a, {TRIGGER}"]
    for c in COLOUR_NAMES:
        for s in SHAPES:
            texts.append(f"a small {c} {s} on the left on a {c} background at sunset, {TRIGGER}")
    for size in SIZE_NAMES:
        for pos in POSITION_NAMES:
            texts.append(f"a {size} red circle {pos} on a blue background")
    return texts


def grammar() -> dict:
    """The grammar as data (written into the manifest)."""
    return {
        "image_size": IMAGE_SIZE,
        "supersample": SUPERSAMPLE,
        "colours": {k: list(v) for k, v in COLOURS.items()},
        "shapes": list(SHAPES),
        "sizes": dict(SIZES),
        "positions": dict(POSITIONS),
        "sunset": {"probability": P_SUNSET, "tint": list(SUNSET_TINT)},
        "caption": "a [size] <colour> <shape> [position] on a <background> background[ at sunset][, PixArFK]",
        "omit": {"size": P_OMIT_SIZE, "position": P_OMIT_POSITION},
        "combinations": len(COMBOS),
        "splits": {k: hex(v) for k, v in SPLITS.items()},
        "trigger": TRIGGER,
        "pixel_art": {"block": STYLE_BLOCK, "colours": PIXEL_COLOURS, "augment_block": AUGMENT_BLOCK},
    }
