#!/usr/bin/env bash
# End to end: drive the real `speedscape` TUI in a detached tmux session (120×40) on the
# embedded micro model: check that exercise 1 asks it for a prompt of its world and that the run
# editor lists that world's words (and flags a word outside it); run exercise 1 and wait for three finished timing rows; run exercise 2 with its
# one-step run where the model has unet_turbo; then complete exercise 4 from
# the keyboard (answer scenario C -- with the one-step model, verified beside LCM-LoRA 4, where
# there is one --, verify it, look at our answer; verify scenario B, under the
# ControlNet where the model has one; save the cheat sheet); open the
# speed landscape (L), run it until two points are whole, cancel, resume and save it; switch it
# to the style-weight curve (W), run it until two weights are whole, cancel and save it; lower
# exercise 3's style weight with [ and watch that run again; run exercise 5 under the ControlNet
# (or see it say the model has none); quit and
# check that the program exited and left the alternate screen, that the report folder is whole,
# and that a second start shows the answer kept.
#
#   SPEEDSCAPE_BIN          the binary (default target/debug/speedscape)
#   SPEEDSCAPE_E2E_TIMEOUT  seconds to wait for the three rows (default 120)
#   SPEEDSCAPE_E2E_ARGS     extra arguments; `--fake-backend` (TEST ONLY: made-up events, no
#                           model) checks the TUI alone, e.g. before the worker is built
#
# Exits non-zero, printing the last screen, on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SPEEDSCAPE_BIN:-target/debug/speedscape}
TIMEOUT=${SPEEDSCAPE_E2E_TIMEOUT:-120}
EXTRA=${SPEEDSCAPE_E2E_ARGS:-}
SESSION="speedscape-e2e-$$"
# The TUI writes its frame-draw and key-to-screen times here on exit (printed at the end).
STATS=${SPEEDSCAPE_UI_STATS:-$(mktemp -d)/ui-stats.json}
# Where `s` saves and the cheat-sheet answers live.
OUT=$(mktemp -d)

fail() {
    echo "tui_e2e: FAIL: $*" >&2
    if tmux has-session -t "$SESSION" 2>/dev/null; then
        echo "---- screen ----" >&2
        tmux capture-pane -p -t "$SESSION" >&2 || true
        echo "----------------" >&2
    fi
    exit 1
}

command -v tmux >/dev/null || fail "tmux is not installed"
[ -x "$BIN" ] || fail "no binary at $BIN (cargo build, or set SPEEDSCAPE_BIN)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

screen() { tmux capture-pane -p -t "$SESSION"; }

# wait_for SECONDS DESCRIPTION TEST-COMMAND...: poll the screen every 0.25 s.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if "$@"; then return 0; fi
        # (Not while waiting for an exit: it may come between the test above and this one.)
        if [[ "$what" != "the program to exit"* ]] && screen | grep -q "e2e-exit="; then
            fail "speedscape exited while waiting for: $what"
        fi
        sleep 0.25
    done
    fail "timed out after ${secs}s waiting for: $what"
}

# A plain shell, so that after the TUI exits its prompt and exit status show.
tmux new-session -d -s "$SESSION" -x 120 -y 40 "env PS1='e2e-shell\$ ' bash --norc --noprofile"
# start STATS-FILE
start() {
    tmux send-keys -t "$SESSION" "clear; SPEEDSCAPE_UI_STATS='$1' '$BIN' --graphics halfblocks --out '$OUT' $EXTRA; echo e2e-exit=\$?" Enter
}
start "$STATS"

has() { screen | grep -q -- "$1"; }
not_has() { ! has "$1"; }
wait_for 30 "the TUI to start (Exercises list)" has "Exercises"
wait_for 60 "the worker to be ready (provider in the header)" has "model "

# Exercise 1 on the micro model: its prompt, and the editor's vocabulary.
tmux send-keys -t "$SESSION" 1
if [ -z "$EXTRA" ]; then
    wait_for 10 "exercise 1's prompt for the micro model" has "a large yellow star on a blue background at sunset"
    tmux send-keys -t "$SESSION" e
    wait_for 10 "the run editor's vocabulary" has "the micro model knows only its small world"
    has "shapes: circle | square | triangle | star" || fail "the editor does not list the shapes"
    tmux send-keys -t "$SESSION" " castle"
    wait_for 10 "a word outside the world flagged" has "not in its world (it reads them as blanks): castle"
    tmux send-keys -t "$SESSION" Escape
    wait_for 10 "the editor to close" not_has "the micro model knows only"
fi
tmux send-keys -t "$SESSION" r
# Keys while the runs go (move between run panels): their handling time is measured.
for _ in 1 2 3 4 5 6; do
    tmux send-keys -t "$SESSION" l
    sleep 0.02
    tmux send-keys -t "$SESSION" h
    sleep 0.02
done

# Finished rows start with ✓ and carry a total time and a speedup.
three_rows() {
    [ "$(screen | grep -cE '^✓ .*[0-9.]+(ms|s) .*[0-9]+\.[0-9]{2}×')" -ge 3 ]
}
wait_for "$TIMEOUT" "three finished rows in the timing table" three_rows
echo "tui_e2e: three finished rows:"
screen | grep -E '^(run|✓) '

keys() { tmux send-keys -t "$SESSION" "$@"; }
# The micro model's one-step UNet (unet_turbo): exercise 2 gains its run, scenario C is answered
# with it and verified beside LCM-LoRA 4 (Levels 3b and 3a of the course).
has_turbo() { [ -f models/micro/unet_turbo/model.onnx ]; }
if has_turbo; then
    keys 2
    wait_for 10 "exercise 2" has "DPM-Solver++ vs LCM-LoRA"
    keys r
    four_done() { [ "$(screen | grep -cE '^✓ ')" -ge 4 ]; }
    wait_for "$TIMEOUT" "exercise 2's four finished runs" four_done
    screen | grep -qE '^✓ one-step \(turbo\) 1 .*[0-9]+\.[0-9]{2}×' ||
        fail "exercise 2 has no finished one-step run with its speedup"
    echo "tui_e2e: exercise 2 with the one-step run:"
    screen | grep -E '^(run|✓) '
fi

# Exercise 4 from the keyboard: scenario C, answer LCM-LoRA 4 (or, with the one-step UNet, the
# one-step model) with a line on speed, verify.
keys 4
wait_for 10 "the cheat sheet" has "Decision cheat sheet ─"
keys h
wait_for 10 "scenario C" has "C. A/B tester"
keys e
wait_for 10 "the answer form" has "Your answer · C. A/B tester"
if has_turbo; then
    keys Left Tab Tab
    chosen="one-step (turbo) 1"
else
    keys Right Right Tab Tab
    chosen="LCM-LoRA 4"
fi
keys -l "one UNet call a step"
keys Enter
wait_for 10 "the answer to be kept" has "answer kept: enter verifies $chosen"
keys r
verdict() { screen | grep -qE '^ (PASS|FAIL) .* ms against a limit of 1000 ms'; }
wait_for "$TIMEOUT" "the verification's PASS/FAIL line" verdict
if has_turbo; then
    three_done() { [ "$(screen | grep -cE '^✓ ')" -ge 3 ]; }
    wait_for "$TIMEOUT" "scenario C's three finished runs (both levels)" three_done
fi
echo "tui_e2e: exercise 4, scenario C:"
screen | grep -E '^(run|✓) |^ (PASS|FAIL) '
keys a
wait_for 10 "our answer" has "Our answer · C. A/B tester"
if has_turbo; then
    wait_for 10 "our reasoning citing both levels measured" has "speed, measured: LCM-LoRA 4 (Level 3a)"
    has "(Level 3b)" || fail "our answer to C does not cite the one-step run"
fi
keys x

# Scenario B (the game studio with a ControlNet): verified under the model's ControlNet where its
# folder has one (adherence within 0.1 of DPM-Solver++ 20's and the SSIM threshold), else on
# quality alone, and our answer says the ControlNet part was not verified and how to get it.
has_controlnet() { ls models/micro/controlnet_*/model.onnx >/dev/null 2>&1; }
keys h
wait_for 10 "scenario B" has "B. Game studio"
keys r
verdict_b() { screen | grep -qE '^ (PASS|FAIL) +SSIM [0-9.]+ against a threshold of 0.80'; }
wait_for "$TIMEOUT" "scenario B's PASS/FAIL line" verdict_b
if has_controlnet; then
    screen | grep -qE '^ (PASS|FAIL) .*edge F1' || fail "scenario B's verdict lacks the control adherence"
fi
echo "tui_e2e: exercise 4, scenario B:"
screen | grep -E '^(run|✓) |^ (PASS|FAIL) '
keys a
wait_for 10 "our answer to B" has "Our answer · B. Game studio"
if has_controlnet; then
    wait_for 10 "our reasoning citing the measured adherence" has "composability, measured"
else
    wait_for 10 "the unverified ControlNet part said" has "the ControlNet part was not verified"
fi
keys x
keys s
wait_for 30 "the cheat sheet to be saved" has "saved to $OUT/exercise-4-"

# The speed landscape (L): run the sweep until two points are whole, check the chart's time
# labels and the table, cancel, resume, cancel again, save its folder.
keys L
wait_for 10 "the landscape" has "L · The speed landscape"
keys r
two_points() { [ "$(screen | grep -cE '✓ DPM-Solver\+\+ +[0-9]+ +([0-9]+)/\1 ')" -ge 2 ]; }
wait_for "$TIMEOUT" "two whole points in the landscape's table" two_points
has "SSIM to the reference against time" || fail "the landscape has no chart title"
screen | grep -qE '[0-9]+ (ms|s)( |$)' || fail "the chart has no time labels"
echo "tui_e2e: the landscape:"
screen | grep -E 'SSIM|ms|reference|DPM-Solver'
keys Escape
sleep 0.5
wait_for 10 "the sweep to stop" has "runs done · enter resumes the rest"
keys r
wait_for 10 "the sweep to resume" has "resuming: "
keys Escape
sleep 0.5
wait_for 10 "the sweep to stop again" has "runs done · enter resumes the rest"
keys s
wait_for 30 "the landscape to be saved" has "saved to $OUT/sweep-"
sweep_dir=$(ls -d "$OUT"/sweep-*/ 2>/dev/null | head -1)
[ -n "$sweep_dir" ] || fail "no sweep folder in $OUT"
for f in plot.png points.csv sweep.json summary.md; do
    [ -f "$sweep_dir/$f" ] || fail "the saved landscape lacks $f"
done
grep -q "DPM-Solver++" "$sweep_dir/points.csv" || fail "points.csv has no DPM-Solver++ point"

# The landscape's weight mode (W): the style-weight curve (LCM-LoRA 4, style 0…1.5, the prompt
# with the micro model's trigger word), run until two weights are whole, cancelled and saved as
# `speedscape sweep --lora-weights` saves it; W again shows the steps. A model folder without a
# style adapter says so instead.
keys W
if [ -n "$EXTRA" ] || [ -f models/micro/loras/style.safetensors ]; then
    wait_for 10 "the weight curve" has "L · W · Composability as a curve"
    if [ -z "$EXTRA" ]; then
        has "PixArFK" || fail "the weight curve's prompt lacks the style trigger word"
    fi
    keys r
    two_weights() { [ "$(screen | grep -cE '✓ style×[0-9.]+ +([0-9]+)/\1 ')" -ge 2 ]; }
    wait_for "$TIMEOUT" "two whole weights in the curve's table" two_weights
    has "SSIM against the style weight" || fail "the weight curve has no chart title"
    has "- LCM-LoRA 4 (cfg" || fail "the weight curve has no findings"
    echo "tui_e2e: the weight curve:"
    screen | grep -E 'style|SSIM|LCM-LoRA'
    keys Escape
    sleep 0.5
    wait_for 10 "the curve to stop" has "runs done · enter resumes the rest"
    keys s
    wait_for 30 "the curve to be saved" has "saved to $OUT/sweep-"
    weights_csv=$(ls "$OUT"/sweep-*/weights.csv 2>/dev/null | head -1)
    [ -n "$weights_csv" ] || fail "no sweep folder with weights.csv in $OUT"
    for f in weights.png sweep.json summary.md; do
        [ -f "$(dirname "$weights_csv")/$f" ] || fail "the saved weight curve lacks $f"
    done
    keys W
    wait_for 10 "the step landscape again" has "L · The speed landscape"
else
    wait_for 10 "the missing style adapter said" has "no weight curve on this model"
fi

# Exercise 3's style keys: [ on the composed run lowers its style weight to 0.9 (fused at run
# time on the LCM-LoRA UNet) and reruns that panel alone. A model folder without a style adapter
# (no loras/style.safetensors) says so instead.
keys 3
wait_for 10 "exercise 3" has "Composability"
keys l l '['
if [ -n "$EXTRA" ] || [ -f models/micro/loras/style.safetensors ]; then
    wait_for 10 "the rerun with the style weight lowered" has "UNet lcm + style×0.9, running it again"
    # (The table's label column is narrow at 120 columns: "style + LCM-…".)
    one_row() { screen | grep -E '^✓ style \+ LCM-' | grep -q "lcm + style×0.9"; }
    wait_for "$TIMEOUT" "the rerun to finish, its row naming its UNet lcm + style×0.9" one_row
else
    wait_for 10 "the missing style adapter said" has "has no style adapter"
fi

# Exercise 5 (ControlNet composability): the control image as the first panel, four runs under
# the ControlNet with its time per step and the edge F1 in the table, predictions typed first
# (a speedup, then two gaps in edge F1). A model folder without a ControlNet says so (cause and
# fix) instead of failing each run. (The micro model's ControlNet `edge` makes this part run.)
keys 5
wait_for 10 "exercise 5" has "5 · ControlNet composability"
if has_controlnet; then
    wait_for 10 "the control image panel" has "control · canny · ×1"
    keys p
    keys -l "3"
    keys Enter
    keys -l "0.05"
    keys Enter
    keys -l "0.1"
    keys Enter
    wait_for 10 "the predictions kept" has "\[you 0.05"
    keys r
    four_rows() { [ "$(screen | grep -cE '^✓ ')" -ge 4 ]; }
    wait_for "$TIMEOUT" "four finished runs under the ControlNet" four_rows
    has "CN/step" || fail "the table has no ControlNet time column"
    has "edge F1" || fail "the table has no adherence column"
    echo "tui_e2e: exercise 5:"
    screen | grep -E '^(run|✓) |\[you'
else
    keys r
    wait_for 10 "the missing ControlNet said" has "cannot run on this model"
    has "models/export.py --controlnet" || fail "exercise 5 does not say how to get a ControlNet"
fi

tmux send-keys -t "$SESSION" q
wait_for 15 "the program to exit" has "e2e-exit="
screen | grep -q "e2e-exit=0" || fail "speedscape exited non-zero"
has 'e2e-shell\$' || fail "the shell prompt did not come back"
[ "$(tmux display-message -p -t "$SESSION" '#{alternate_on}')" = "0" ] ||
    fail "the terminal is still in the alternate screen"
screen | grep -q "Exercises" && fail "the TUI is still on screen after exit"
# The report folder: the sheet with the verdict, the answers, scenario C's runs.
sheet=$(ls -d "$OUT"/exercise-4-*/ 2>/dev/null | head -1)
[ -n "$sheet" ] || fail "no exercise-4 folder in $OUT"
grep -qF "Your choice: $chosen" "$sheet/cheatsheet.md" || fail "cheatsheet.md lacks the answer"
grep -qE "\*\*(PASS|FAIL) — [0-9]+ ms against a limit of 1000 ms\*\*" "$sheet/cheatsheet.md" ||
    fail "cheatsheet.md lacks the verdict"
for f in contact-sheet.png report.md timings.csv timings.json; do
    [ -f "$sheet/scenario-C/$f" ] || fail "scenario-C/$f is missing"
done
if has_turbo; then want='"one_step"'; else want='"lcm"'; fi
grep -q "$want" "$OUT/cheatsheet.json" || fail "the answers file lacks the choice"
grep -q "Verified: LCM-LoRA 8 against DPM-Solver++ 20" "$sheet/cheatsheet.md" ||
    fail "cheatsheet.md lacks scenario B's verification"
[ -f "$sheet/scenario-B/contact-sheet.png" ] || fail "scenario-B/contact-sheet.png is missing"

# A second start shows the kept answer.
tmux send-keys -t "$SESSION" "clear" Enter
start "$OUT/second-start-stats.json"
wait_for 30 "the TUI to start again" has "Exercises"
keys 4 h
wait_for 10 "the kept answer" has "one UNet call a step"
keys q
wait_for 15 "the program to exit again" has "e2e-exit="
screen | grep -q "e2e-exit=0" || fail "speedscape exited non-zero the second time"
echo "tui_e2e: the cheat sheet was saved in $sheet and the answer kept"

echo "tui_e2e: UI timings (ms):"
cat "$STATS" 2>/dev/null || echo "(no stats written)"
echo "tui_e2e: ok"
