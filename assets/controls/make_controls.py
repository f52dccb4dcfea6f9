"""Draws the control images of exercise 5 and of the cheat sheet's scenario B (assets/controls/):
for each, a scene of the micro model's world (64x64) and a 512x512 drawing for SD v1.5, all meant
for `preprocess = "canny"` (speedscape takes their Canny
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


def micro_scene(colour: str, shape: str, background: str, position: str) -> np.ndarray:
    """A large shape of the micro model's world (64x64), upright and centred on its row, no
    sunset gradient."""
    scene = world.Scene(
        colour=colour,
        shape=shape,
        background=background,
        size="large",
        position=position,
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


def knight(size: int = 512) -> np.ndarray:
    """A knight's bust facing the viewer (scenario B, the game studio's character portraits): a
    helmet with a visor slit and a plume, shoulders, a breastplate and a shield."""
    img = Image.new("RGB", (size, size), (70, 70, 90))  # studio backdrop
    d = ImageDraw.Draw(img)
    d.polygon([(256, 40), (236, 110), (276, 110)], fill=(200, 40, 40))  # plume
    d.rounded_rectangle((186, 100, 326, 250), radius=50, fill=(185, 190, 200), outline=(30, 30, 40), width=4)  # helmet
    d.rectangle((206, 160, 306, 178), fill=(25, 25, 30))  # visor slit
    d.line((256, 110, 256, 150), fill=(30, 30, 40), width=4)  # helmet ridge
    d.rectangle((226, 250, 286, 285), fill=(150, 155, 165), outline=(30, 30, 40), width=3)  # gorget
    d.polygon([(96, 330), (186, 280), (326, 280), (416, 330), (440, 512), (72, 512)],
              fill=(165, 170, 180), outline=(30, 30, 40))  # shoulders and breastplate
    d.ellipse((96, 300, 186, 370), fill=(140, 145, 155), outline=(30, 30, 40), width=4)  # left pauldron
    d.ellipse((326, 300, 416, 370), fill=(140, 145, 155), outline=(30, 30, 40), width=4)  # right pauldron
    d.polygon([(300, 360), (400, 360), (400, 440), (350, 500), (300, 440)],
              fill=(40, 70, 160), outline=(230, 200, 70))  # shield
    d.line((350, 365, 350, 490), fill=(230, 200, 70), width=6)  # its cross
    d.line((305, 400, 395, 400), fill=(230, 200, 70), width=6)
    return np.asarray(img, dtype=np.uint8).copy()


def main() -> None:
    images = (
        # exercise 5 (its prompts: a large yellow star / a cottage on a hillside)
        ("micro-star.png", micro_scene("yellow", "star", "blue", "on the right")),
        ("sd15-cottage.png", cottage()),
        # the cheat sheet's scenario B (a large purple triangle in the middle / a knight)
        ("micro-triangle.png", micro_scene("purple", "triangle", "white", "in the middle")),
        ("sd15-knight.png", knight()),
    )
    for name, rgb in images:
        Image.fromarray(rgb, "RGB").save(HERE / name, optimize=True)
        e = edges.canny(rgb)
        print(f"{name}: {rgb.shape[1]}x{rgb.shape[0]}, Canny edge pixels {int(e.sum())} ({e.mean():.1%})")


if __name__ == "__main__":
    main()
