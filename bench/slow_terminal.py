#!/usr/bin/env python
"""The TUI over a slow link: exercise 1 on the embedded micro model with sixel previews, once on a
terminal that reads as fast as it can and once on one that takes in at most `--rate` bytes a second
(default 1 MB/s, an ordinary SSH link), side by side in one run.

    python bench/slow_terminal.py [--rate 1000000] [--bin target/release/speedscape] [--json out.json]

The terminal is a pseudo-terminal this script reads: on the slow side it reads in small slices,
sleeping to keep to the rate, so the TUI's writes block as they would on a full TCP window. It
answers the few queries the TUI sends (DA1 with sixel, XTVERSION as xterm, the cell size), types
`1` then `r`, moves between panels while the runs go (the TUI measures key → drawn), waits for the
three finished rows (✓), saves (`s`) and quits (`q`).

Measured per side: the runs' ms/step (the saved timings.json: previews must not slow the runs),
the sixel frames that reached the terminal against the previews the runs made (a preview per step:
frames the terminal could not take in time are dropped, not queued, so on the slow side fewer
arrive), the seconds from `r` to the last ✓ on screen, the bytes the terminal took, and the TUI's
own key → drawn and frame-draw times (SPEEDSCAPE_UI_STATS).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLS, ROWS, CELL_W, CELL_H = 120, 40, 10, 20
SIXEL = re.compile(rb"\x1bP[0-9;]*q")
# query -> the answer an xterm with sixel would give
ANSWERS = [
    (b"\x1b[c", b"\x1b[?62;4;22c"),
    (b"\x1b[>q", b"\x1bP>|xterm(379)\x1b\\"),
    (b"\x1b[16t", f"\x1b[6;{CELL_H};{CELL_W}t".encode()),
    (b"\x1b[14t", f"\x1b[4;{ROWS * CELL_H};{COLS * CELL_W}t".encode()),
]


class Terminal:
    """The pseudo-terminal's reading end: everything the TUI wrote, read at most `rate` bytes/s."""

    def __init__(self, fd: int, rate: float | None):
        self.fd, self.rate = fd, rate
        self.data = bytearray()
        self.t0 = time.monotonic()
        self.answered = 0  # how much of `data` the query scan has seen
        self.arrivals: list[tuple[int, float]] = []  # (len(data) after a read, when)

    def pump(self, seconds: float) -> bool:
        """Reads for `seconds`; False once the TUI has closed the terminal."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.rate is not None:
                ahead = len(self.data) / self.rate - (time.monotonic() - self.t0)
                if ahead > 0:
                    time.sleep(min(ahead, end - time.monotonic(), 0.05))
                    continue
            r, _, _ = select.select([self.fd], [], [], max(0.0, min(0.05, end - time.monotonic())))
            if not r:
                continue
            try:
                chunk = os.read(self.fd, 4096 if self.rate is None else 1024)
            except OSError:
                return False
            if not chunk:
                return False
            self.data += chunk
            self.arrivals.append((len(self.data), time.monotonic()))
            self.answer()
        return True

    def answer(self):
        window = bytes(self.data[max(0, self.answered - 8):])
        for query, reply in ANSWERS:
            if query in window:
                os.write(self.fd, reply)
        self.answered = len(self.data)

    def wait_for(self, pattern: bytes, count: int = 1, timeout: float = 120.0, since: int = 0) -> bool:
        end = time.monotonic() + timeout
        while self.data.count(pattern, since) < count:
            if time.monotonic() > end or not self.pump(0.1):
                return False
        return True

    def arrived(self, pattern: bytes, count: int, since: int) -> float:
        """When the `count`-th `pattern` after offset `since` was read (monotonic seconds)."""
        at = since - 1
        for _ in range(count):
            at = self.data.index(pattern, at + 1)
        end = at + len(pattern)
        return next(t for n, t in self.arrivals if n >= end)

    def key(self, k: bytes):
        os.write(self.fd, k)


def run_side(binary: str, rate: float | None, work: Path) -> dict:
    out, stats = work / "out", work / "ui_stats.json"
    pid, fd = pty.fork()
    if pid == 0:
        env = dict(os.environ, TERM="xterm-256color", SPEEDSCAPE_UI_STATS=str(stats))
        os.execve(binary, [binary, "--graphics", "sixel", "--out", str(out)], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, COLS * CELL_W, ROWS * CELL_H))
    term = Terminal(fd, rate)
    try:
        if not term.wait_for(b"Exercises", timeout=60):
            raise RuntimeError("the TUI did not start")
        term.pump(3.0)  # the worker opens the model
        term.key(b"1")
        term.pump(1.0)
        started = len(term.data)
        t_run = time.monotonic()
        term.key(b"r")
        for _ in range(20):  # keys while the runs go; the TUI times each to its drawn effect
            term.key(b"l")
            term.pump(0.1)
            term.key(b"h")
            term.pump(0.1)
        if not term.wait_for("✓".encode(), count=3, timeout=300, since=started):
            raise RuntimeError("three finished rows never reached the terminal")
        to_rows = term.arrived("✓".encode(), 3, started) - t_run
        frames = len(SIXEL.findall(bytes(term.data[started:])))
        term.pump(1.0)
        term.key(b"s")
        if not term.wait_for(b"saved to", timeout=60, since=started):
            raise RuntimeError("the exercise was not saved")
        term.key(b"q")
        while term.pump(0.5):
            pass
    finally:
        os.waitpid(pid, 0)
    saved = json.loads(next(out.glob("exercise-1-*/timings.json")).read_text())
    reports = [r for r in saved["runs"] if r]
    steps = sum(len(r["timings"]["unet_ms"]) for r in reports)
    return {
        "rate_bytes_per_s": rate,
        "runs_unet_ms_per_step": [round(sum(r["timings"]["unet_ms"]) / len(r["timings"]["unet_ms"]), 2) for r in reports],
        "runs_total_ms": [round(r["timings"]["total_ms"], 1) for r in reports],
        "previews_made": steps,
        "sixel_frames_on_screen": frames,
        "r_to_three_finished_rows_s": round(to_rows, 2),
        "bytes_to_terminal": len(term.data),
        "ui": json.loads(stats.read_text()) if stats.is_file() else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1_000_000)
    ap.add_argument("--bin", default=os.environ.get("SPEEDSCAPE_BIN", str(ROOT / "target/release/speedscape")))
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    result = {}
    for name, rate in (("fast", None), ("slow", args.rate)):
        with tempfile.TemporaryDirectory() as work:
            result[name] = run_side(args.bin, rate, Path(work))
        print(f"{name}: {json.dumps(result[name])}", file=sys.stderr)
    f, s = result["fast"], result["slow"]
    print(f"{'':34s} {'fast':>12s} {'slow (' + str(int(args.rate / 1e3)) + ' kB/s)':>18s}")
    for key in ("runs_unet_ms_per_step", "runs_total_ms", "previews_made", "sixel_frames_on_screen", "r_to_three_finished_rows_s", "bytes_to_terminal"):
        print(f"{key:34s} {str(f[key]):>12s} {str(s[key]):>18s}")
    for key in ("key_to_drawn_while_running", "frame_draw_while_running"):
        print(f"{key + ' (ms)':34s} {json.dumps((f['ui'] or {}).get(key)):>12s} {json.dumps((s['ui'] or {}).get(key)):>18s}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
