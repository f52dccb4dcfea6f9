"""Draws exercise 5's control images (assets/controls/): a scene of the micro model's world and a
512x512 cottage for SD v1.5, both meant for `preprocess = "canny"` (speedscape takes their Canny
edges, diffusers' recipe: cv2.Canny(rgb, 100, 200)). Deterministic: running it again writes the
same pixels.

    .venv-ref/bin/python assets/controls/make_controls.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "models" / "micro_src"))
sys.path.insert(0, str(HERE.parents[1] / "models"))

import edges  # noqa: E402
import world  # noqa: E402


def micro_star() -> np.ndarray:
    """A large yellow star on the right on a blue background: a scene of the micro model's world
    (64x64), upright and centred on its row, no sunset gradient."""
    scene = world.Scene(
        colour="yellow",
        shape="star",
        background="blue",
        size="large",
        position="on the right",
        sunset=False,
        dx=0.0,
        dy=0.0,
        rotation=0.0,
        tint=(0, 0, 0),
    )
    return world.render(scene)


def cottage(size: int = 512) -> np.ndarray:
    """A cottage on a hill: walls, a pitched roof, a door, two windows with crosses, a chimney,
    the sun; flat colours with strong contrast, so every outline is a Canny edge."""
    img = Image.new("RGB", (size, size), (135, 190, 235))  # sky
    d = ImageDraw.Draw(img)
    d.ellipse((-120, 380, 640, 760), fill=(90, 160, 70))  # hill
    d.ellipse((400, 40, 470, 110), fill=(250, 215, 60))  # sun
    d.rectangle((150, 250, 370, 420), fill=(235, 220, 190), outline=(60, 40, 30), width=3)  # walls
    d.rectangle((320, 160, 345, 230), fill=(120, 70, 50), outline=(50, 30, 20), width=2)  # chimney
    d.polygon([(130, 255), (260, 150), (390, 255)], fill=(170, 50, 40), outline=(60, 30, 20))  # roof
    d.rectangle((235, 330, 285, 420), fill=(110, 60, 30), outline=(40, 20, 10), width=3)  # door
    d.ellipse((272, 372, 280, 380), fill=(230, 200, 60))  # door knob
    for x0 in (170, 300):  # windows
        d.rectangle((x0, 280, x0 + 50, 325), fill=(80, 130, 200), outline=(40, 30, 20), width=3)
        d.line((x0 + 25, 280, x0 + 25, 325), fill=(40, 30, 20), width=3)
        d.line((x0, 302, x0 + 50, 302), fill=(40, 30, 20), width=3)
    return np.asarray(img, dtype=np.uint8).copy()


def main() -> None:
    for name, rgb in (("micro-star.png", micro_star()), ("sd15-cottage.png", cottage())):
        Image.fromarray(rgb, "RGB").save(HERE / name, optimize=True)
        e = edges.canny(rgb)
        print(f"{name}: {rgb.shape[1]}x{rgb.shape[0]}, Canny edge pixels {int(e.sum())} ({e.mean():.1%})")


if __name__ == "__main__":
    main()
