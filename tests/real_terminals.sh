#!/usr/bin/env bash
# Real graphics terminals, under Xvfb: does each run's image reach the screen?
#
# (a) xterm as a VT340 (sixel): the TUI runs exercise 1 on the embedded micro model; after the
#     three runs finish, a screenshot of the X screen must show each run's image in its panel:
#     the panel's pixels, downscaled to the image's size, match the PNG the run saved (`s`) with
#     SSIM ≥ SIXEL_BAR.
# (b) kitty 0.26.5 (Debian 12's; LIBGL_ALWAYS_SOFTWARE=1): the same run. kitty before 0.28 has
#     no Unicode placeholders, which is how ratatui-image draws kitty images, so the TUI must
#     fall back (half-blocks) and say so: the protocol and note it chose are checked in the
#     TUI's test-hooks log, and the panels must match at HALFBLOCK_BAR.
# In each, `speedscape doctor` must report the terminal, its version and that protocol.
# (c) A kitty ≥ 0.28 or another terminal with kitty graphics (the placeholder path) is NOT
#     covered: none can be installed from the registries here (Debian 12 ships kitty 0.26.5 and
#     no WezTerm; the `kitty` on PyPI is an unrelated package; kitty's and WezTerm's GitHub
#     releases were not reachable from this box).
#
# Where the panels are: the TUI (feature test-hooks) writes its protocol, font size and each
# panel's cell rectangle to SPEEDSCAPE_TEST_GRAPHICS_LOG; tests/real_terminals.py crops and
# scores. Keys are typed with xdotool. Screenshots are kept in target/real-terminals/.
#
# The bars, measured once under Xvfb (Debian 12: xterm 379 at 120×40 cells of 8×15 px, kitty
# 0.26.5 at 7×15 px, DejaVu Sans Mono 9), SSIM per panel at the PNG's 64×64:
#   xterm, sixel (detected)                          0.956 0.959 0.960
#   xterm, --graphics halfblocks                     0.939 0.942 0.942
#   kitty 0.26.5, half-blocks (the fallback)         0.955 0.955 0.955
#   xterm, --graphics kitty (nothing reaches it)     0.394 0.403 0.413   (blank panels)
#   kitty 0.26.5, --graphics sixel (likewise)        0.025 0.031 0.031   (sixel data as text)
# SIXEL_BAR sits between sixel and half-blocks on the same xterm: the gap is narrow because the
# micro model's images are smooth (half-blocks at ~36×36 lose little at 64×64), so the bar
# catches a sixel terminal drawing half-blocks only just; the protocol the TUI chose is checked
# in its log too, and where it draws pixels (sixel, kitty) real_terminals.py also checks that
# each panel is drawn in pixels: the share of its cells with detail inside them (sixel
# 0.86–0.92, half-blocks 0.0; the bar 0.5). HALFBLOCK_BAR sits between half-blocks and a screen that shows no image.
# The broken runs are how the test was proven to fail: SPEEDSCAPE_REAL_GRAPHICS=kitty (xterm
# fails) and SPEEDSCAPE_REAL_GRAPHICS=sixel SPEEDSCAPE_REAL_ONLY=kitty (kitty fails).
#
#   SPEEDSCAPE_BIN             the binary, built with --features test-hooks
#   SPEEDSCAPE_REAL_TIMEOUT    seconds to wait for the three runs in each terminal (default 150)
#   SPEEDSCAPE_REAL_TOTAL      seconds the whole test may take (default 300)
#   SPEEDSCAPE_REAL_GRAPHICS   --graphics for both terminals (default auto); forcing a protocol
#                              the terminal cannot show makes the test fail (how it was proven)
#   SPEEDSCAPE_REAL_ONLY       xterm or kitty: only that terminal
#
# Exits non-zero on any failure, printing the TUI's log and keeping the screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SPEEDSCAPE_BIN:-target/debug/speedscape}
TIMEOUT=${SPEEDSCAPE_REAL_TIMEOUT:-150}
# No wait goes past this many seconds from the start (both terminals, every step).
TOTAL=${SPEEDSCAPE_REAL_TOTAL:-300}
GRAPHICS=${SPEEDSCAPE_REAL_GRAPHICS:-auto}
ONLY=${SPEEDSCAPE_REAL_ONLY:-}
PY=.venv-ref/bin/python
ART=target/real-terminals
SIXEL_BAR=0.95
HALFBLOCK_BAR=0.8
COLS=120
ROWS=40

fail() {
    echo "real_terminals: FAIL: $*" >&2
    [ -n "${LOG:-}" ] && [ -f "$LOG" ] && { echo "---- TUI graphics log ----" >&2; cat "$LOG" >&2; }
    exit 1
}

for tool in Xvfb xterm kitty xdotool import; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (test.sh installs it)"
done
[ -x "$BIN" ] || fail "no binary at $BIN (cargo build --features test-hooks, or set SPEEDSCAPE_BIN)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
[ -x "$PY" ] || fail "no $PY (scripts/setup-ref.sh makes it)"
mkdir -p "$ART"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The X server: it picks a free display and says which.
Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp 3>"$WORK/display" >"$WORK/xvfb.log" 2>&1 &
PIDS+=($!)
# wait_for SECONDS DESCRIPTION TEST-COMMAND...: poll every 0.25 s (never past TOTAL).
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    ((deadline <= TOTAL)) || deadline=$TOTAL
    while ((SECONDS < deadline)); do
        if "$@"; then return 0; fi
        sleep 0.25
    done
    fail "timed out after ${secs}s waiting for: $what"
}
has_display() { [ -s "$WORK/display" ]; }
wait_for 20 "Xvfb to start" has_display
export DISPLAY=":$(head -n1 "$WORK/display")"

# log_says PYTHON-EXPRESSION: true when the TUI's log exists and the expression on it (`d`) holds.
log_says() {
    [ -s "$LOG" ] && "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$LOG" "$1" 2>/dev/null
}
worker_settled() { log_says 'd.get("worker", {}).get("ready") or d.get("worker", {}).get("fatal")'; }
worker_failed() { log_says 'd.get("worker", {}).get("fatal")'; }
# Exercise 1's three runs show their final images.
three_final() {
    log_says 'sum(1 for p in d.get("panels", []) if p["exercise"] == 0 and p["run"] < 3 and p["final"] and p["image"]) >= 3'
}
saved_three() { [ "$(find "$OUT" -name '[123]-*.png' | wc -l)" -ge 3 ]; }
terminal_gone() { ! kill -0 "$TERM_PID" 2>/dev/null; }

# Screenshots until two in a row are the same (the terminal has drawn everything), then keeps it.
settled_screenshot() {
    local to=$1 prev="" now i
    for i in $(seq 1 30); do
        import -window root "$WORK/shot.png"
        now=$(md5sum <"$WORK/shot.png")
        if [ "$now" = "$prev" ]; then break; fi
        prev=$now
        sleep 1
    done
    cp "$WORK/shot.png" "$to"
}

# run_in NAME BAR PROTOCOL NOTE -- TERMINAL-COMMAND...: exercise 1 in that terminal; the TUI
# must have chosen PROTOCOL with NOTE on the status line (checked when --graphics is auto), and
# every panel must match its run's PNG at BAR.
run_in() {
    local name=$1 bar=$2 protocol=$3 note=$4
    shift 5
    LOG="$WORK/$name.json"
    OUT="$WORK/$name-out"
    mkdir -p "$OUT"
    echo "real_terminals: $name: starting"
    SPEEDSCAPE_TEST_GRAPHICS_LOG="$LOG" "$@" "$BIN" --graphics "$GRAPHICS" --out "$OUT" \
        >"$WORK/$name.stdout" 2>&1 &
    TERM_PID=$!
    PIDS+=("$TERM_PID")
    wait_for 60 "$name: the TUI to start and the model to open" worker_settled
    if worker_failed; then fail "$name: the worker failed"; fi
    local wid
    wid=$(timeout 30 xdotool search --sync --onlyvisible --pid "$TERM_PID" | head -n1)
    [ -n "$wid" ] || fail "$name: no window of the terminal's"
    timeout 30 xdotool windowfocus --sync "$wid" || fail "$name: could not focus the terminal"
    local X Y WIDTH HEIGHT SCREEN WINDOW
    eval "$(xdotool getwindowgeometry --shell "$wid")"
    xdotool key --delay 100 1 r
    wait_for "$TIMEOUT" "$name: exercise 1's three runs to show their final images" three_final
    settled_screenshot "$ART/$name.png"
    xdotool key s
    wait_for 30 "$name: the three runs' PNGs to be saved" saved_three
    xdotool key q
    wait_for 20 "$name: the TUI and the terminal to exit" terminal_gone
    # Kept beside the screenshot: what the TUI logged, and the PNGs the panels are scored on.
    cp "$LOG" "$ART/$name.json"
    rm -rf "${ART:?}/$name-saved"
    cp -r "$OUT" "$ART/$name-saved"
    local expect=()
    if [ "$GRAPHICS" = auto ]; then expect=(--protocol "$protocol" --note "$note"); fi
    "$PY" tests/real_terminals.py --shot "$ART/$name.png" --log "$LOG" --saved "$OUT" \
        --window "$X,$Y,$WIDTH,$HEIGHT" --bar "$bar" --crop "$ART/$name-tui.png" "${expect[@]}" \
        || fail "$name: the panels do not show the runs' images (screenshot: $ART/$name.png)"
}

# doctor_in NAME TERMINAL GRAPHICS -- TERMINAL-COMMAND...: `speedscape doctor` in that terminal
# (under `script`, so its output is kept while stdin and stdout stay the terminal's) must name
# the terminal and the protocol the TUI chose there (bash patterns: `XTerm [0-9]*`).
doctor_in() {
    local name=$1 want_terminal=$2 want_graphics=$3
    shift 4
    local report="$ART/$name-doctor.txt"
    "$@" script -qec "'$BIN' doctor --device cpu" "$WORK/$name-doctor.raw" \
        >"$WORK/$name-doctor.stdout" 2>&1 &
    TERM_PID=$!
    PIDS+=("$TERM_PID")
    wait_for 60 "$name: speedscape doctor to finish" terminal_gone
    tr -d '\r' <"$WORK/$name-doctor.raw" >"$report"
    local terminal graphics
    terminal=$(sed -n 's/^terminal  *//p' "$report")
    graphics=$(sed -n 's/^graphics  *//p' "$report")
    echo "real_terminals: $name: doctor: terminal $terminal; graphics $graphics"
    # shellcheck disable=SC2053
    [[ $terminal == $want_terminal ]] ||
        fail "$name: doctor reports the terminal as '$terminal', not '$want_terminal'"
    # shellcheck disable=SC2053
    [[ $graphics == $want_graphics ]] ||
        fail "$name: doctor reports the graphics as '$graphics', not '$want_graphics'"
}

if [ "$ONLY" != kitty ]; then
    # Sixel on: a VT340 with 256 colour registers; window ops on, so it answers the font-size query.
    xterm=(xterm -ti vt340 -geometry "${COLS}x${ROWS}+0+0" -b 0 -fa "DejaVu Sans Mono" -fs 9
        -xrm 'XTerm*decTerminalID: vt340' -xrm 'XTerm*numColorRegisters: 256'
        -xrm 'XTerm*allowWindowOps: true' -e)
    run_in xterm-sixel "$SIXEL_BAR" sixel "" -- "${xterm[@]}"
    doctor_in xterm-sixel 'XTerm [0-9]*' 'sixel (detected)' -- "${xterm[@]}"
fi
if [ "$ONLY" != xterm ]; then
    kitty=(env LIBGL_ALWAYS_SOFTWARE=1 kitty --config NONE -o placement_strategy=top-left
        -o window_padding_width=0 -o initial_window_width="${COLS}c"
        -o initial_window_height="${ROWS}c" -o remember_window_size=no -o font_size=9
        -o "font_family=DejaVu Sans Mono" -o enable_audio_bell=no)
    version=$(kitty --version | awk '{print $2}')
    IFS=. read -r major minor _ <<<"$version"
    if ((major == 0 && minor < 28)); then
        note="kitty $version: images as half-blocks (kitty < 0.28 has no Unicode placeholders)"
        run_in "kitty-$major.$minor" "$HALFBLOCK_BAR" halfblocks "$note" -- "${kitty[@]}"
        doctor_in "kitty-$major.$minor" "kitty $version" "halfblocks ($note)" -- "${kitty[@]}"
    else
        # Never run here (no kitty >= 0.28 to install): the placeholder path, at the sixel bar.
        run_in "kitty-$major.$minor" "$SIXEL_BAR" kitty "" -- "${kitty[@]}"
        doctor_in "kitty-$major.$minor" "kitty $version" 'kitty (detected)' -- "${kitty[@]}"
    fi
fi
echo "real_terminals: OK (screenshots in $ART/)"
