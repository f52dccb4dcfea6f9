"""Scores a real terminal's screenshot for tests/real_terminals.sh: does each run panel show the
image that run saved?

The TUI (feature test-hooks) logs the terminal's size in cells, the font size in pixels it
sized images for (the terminal's answer; 10x20 when it was not asked) and each panel's cell
rectangle with the part its image covers. The terminal's window (no border, no padding, the
grid at its top-left) gives the real cell size on screen. ratatui-image scales the image to fit that part, keeping its shape
in the font size it assumed, at the part's top-left corner. That part of the screenshot,
downscaled to the PNG's size, is compared with the PNG (SSIM over RGB). Run with .venv-ref/bin/python (numpy, pillow,
scikit-image).
"""

import argparse
import json
import pathlib
import sys

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

CONTROL_PANEL = 2**64 - 1
# A cell "has detail" when its median pixel row spans more than this many levels (of 255).
DETAIL_LEVELS = 6
# Protocols that draw pixels must show detail in at least this share of a panel's cells; measured
# under Xvfb: sixel in xterm 0.86-0.92, half-blocks (xterm and kitty 0.26) 0.0.
PIXEL_SHARE = 0.5
PIXEL_PROTOCOLS = ("sixel", "kitty", "iterm2")


def saved_png(saved: pathlib.Path, run: int) -> pathlib.Path:
    """The PNG `s` saved for run index `run` (files are named `{run + 1}-{label}.png`)."""
    found = sorted(saved.glob(f"*/{run + 1}-*.png"))
    if len(found) != 1:
        sys.exit(f"real_terminals.py: expected one saved PNG for run {run + 1}, found {found}")
    return found[0]


def image_box(image_cells, font, cell):
    """Screen pixels (left, top, right, bottom) of a panel's image: a square in the `font` the TUI
    assumed, inside its cell rectangle `image_cells`, at the top-left; `cell` is the real cell
    size in pixels (the window's origin added by the caller)."""
    x, y, w, h = image_cells
    fw, fh = font
    side = min(w * fw, h * fh)
    cw, ch = cell
    left, top = x * cw, y * ch
    return (round(left), round(top), round(left + side / fw * cw), round(top + side / fh * ch))


def detail_share(shot: Image.Image, log: dict, window, panel: dict) -> float:
    """The share of a panel's whole cells whose pixels vary across the cell's width (the median
    pixel row spans more than DETAIL_LEVELS in some channel). Half-blocks colour a cell's upper
    and lower halves flat, so they score 0; an image drawn in pixels (sixel, kitty, iTerm2) varies
    inside most cells."""
    wx, wy, ww, wh = window
    cols, rows = log["size"]
    cw, ch = ww // cols, wh // rows
    pixels = np.asarray(shot, dtype=np.int16)
    left, top, right, bottom = image_box(panel["image"], log["font"], (cw, ch))
    x, y, w, h = panel["image"]
    detailed = total = 0
    for cy in range(y, y + h):
        for cx in range(x, x + w):
            px, py = cx * cw, cy * ch
            if px + cw > right or py + ch > bottom:
                continue
            cell = pixels[wy + py : wy + py + ch, wx + px : wx + px + cw]
            spans = (cell.max(axis=1) - cell.min(axis=1)).max(axis=1)
            total += 1
            detailed += bool(np.median(spans) > DETAIL_LEVELS)
    return detailed / max(total, 1)


def final_panels(log: dict) -> list[dict]:
    """Exercise 1's three run panels with final images, in run order."""
    panels = [
        p for p in log["panels"] if p["exercise"] == 0 and p["run"] != CONTROL_PANEL and p["final"]
    ]
    if len(panels) < 3:
        sys.exit(f"real_terminals.py: the log shows {len(panels)} final panels, not 3")
    return sorted(panels, key=lambda p: p["run"])


def score(shot: Image.Image, log: dict, saved: pathlib.Path, window) -> list[tuple[int, float]]:
    wx, wy, ww, wh = window
    cols, rows = log["size"]
    # Cells are whole pixels; a window may be a pixel larger than its grid (kitty's is).
    cell = (ww // cols, wh // rows)
    out = []
    for p in final_panels(log):
        want = Image.open(saved_png(saved, p["run"])).convert("RGB")
        left, top, right, bottom = image_box(p["image"], log["font"], cell)
        got = shot.crop((wx + left, wy + top, wx + right, wy + bottom))
        got = got.resize(want.size, Image.Resampling.BOX)
        s = structural_similarity(
            np.asarray(got), np.asarray(want), channel_axis=2, data_range=255
        )
        out.append((p["run"], float(s)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shot", required=True, type=pathlib.Path)
    ap.add_argument("--log", required=True, type=pathlib.Path)
    ap.add_argument("--saved", required=True, type=pathlib.Path)
    ap.add_argument("--window", required=True, help="the terminal window: X,Y,WIDTH,HEIGHT")
    ap.add_argument("--bar", required=True, type=float)
    ap.add_argument("--crop", type=pathlib.Path, help="write the TUI's part of the screenshot here")
    ap.add_argument("--protocol", help="the protocol the TUI must have chosen")
    ap.add_argument("--note", help="the status-line note it must have made ('' for none)")
    args = ap.parse_args()

    log = json.loads(args.log.read_text())
    shot = Image.open(args.shot).convert("RGB")
    window = [int(v) for v in args.window.split(",")]
    wx, wy, ww, wh = window
    cols, rows = log["size"]
    print(
        f"real_terminals.py: terminal {log['terminal']}, protocol {log['protocol']} "
        f"({log['how']}), {cols}x{rows} cells in a {ww}x{wh} window, images sized for "
        f"{log['font'][0]}x{log['font'][1]} px cells"
    )
    if args.crop:
        shot.crop((wx, wy, wx + ww, wy + wh)).save(args.crop, optimize=True)
    failed = []
    if args.protocol is not None and log["protocol"] != args.protocol:
        failed.append(f"protocol {log['protocol']!r}, expected {args.protocol!r}")
    if args.note is not None and (log["note"] or "") != args.note:
        failed.append(f"status-line note {log['note']!r}, expected {args.note!r}")
    for run, s in score(shot, log, args.saved, window):
        verdict = "ok" if s >= args.bar else "BELOW THE BAR"
        print(f"real_terminals.py: run {run + 1}: SSIM {s:.3f} (bar {args.bar}) {verdict}")
        if s < args.bar:
            failed.append(f"run {run + 1}'s panel: SSIM {s:.3f} < {args.bar}")
    # An image must be drawn in pixels where the protocol draws pixels: the SSIM bar alone barely
    # tells sixel (0.956+) from half-blocks (0.94-0.955) on the micro model's smooth images.
    if log["protocol"] in PIXEL_PROTOCOLS:
        for p in final_panels(log):
            share = detail_share(shot, log, window, p)
            verdict = "ok" if share >= PIXEL_SHARE else "NO PIXEL DETAIL"
            print(
                f"real_terminals.py: run {p['run'] + 1}: {share:.2f} of its cells have detail "
                f"inside them (bar {PIXEL_SHARE}) {verdict}"
            )
            if share < PIXEL_SHARE:
                failed.append(
                    f"run {p['run'] + 1}'s panel has no detail inside its cells "
                    "(blank, or drawn in cells)"
                )
    if failed:
        sys.exit("real_terminals.py: " + "; ".join(failed))


if __name__ == "__main__":
    main()
