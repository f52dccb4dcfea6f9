#!/usr/bin/env bash
# The terminal always comes back: drive the real `speedscape` TUI in a detached tmux session and
# check, after each way out, that the program left the alternate screen, showed the cursor, left
# the tty cooked (`stty -a`: icanon echo, checked in the same command line, before the shell's
# readline touches it) and that the shell prompt works.
#
#   1. refusals: TERM=dumb on a real terminal; stdout a pipe; stdin /dev/null (exit 1, the hint)
#   2. --graphics auto where the terminal has no image protocol (tmux): half-blocks, said so;
#      resized during a run: 40×10 shows "terminal too small: 40×10", then 100×30 redraws the layout
#      at that size, and the run goes on to finish
#   3. SIGTERM, SIGINT, SIGHUP during a run: the run is cancelled, exit 143/130/129, the message
#      names the signal and the run, nothing is left in the save folder; and the terminal
#      itself closing (tmux kill-window: the kernel's SIGHUP): the process exits
#   4. a panic on the UI thread (SPEEDSCAPE_TEST_PANIC=ui, key `!`): exit 101, the report and
#      the bug hint printed after the alternate screen is left
#   5. a panic on the inference thread (SPEEDSCAPE_TEST_PANIC=worker, micro model): the runs show
#      it as their error, the TUI keeps going and quits cleanly, the report printed at exit
#   6. 1000 random keys (no q, no ctrl keys) during runs: still alive and answering, quits with 0
#
#   SPEEDSCAPE_BIN   the binary (default target/debug/speedscape)
#   KEYS_SEED        seed of the random keys (default 7)
#
# Exits non-zero, printing the last screen, on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SPEEDSCAPE_BIN:-target/debug/speedscape}
SEED=${KEYS_SEED:-7}
SESSION="speedscape-term-$$"
OUT=$(mktemp -d)

fail() {
    echo "tui_terminal: FAIL: $*" >&2
    if tmux has-session -t "$SESSION" 2>/dev/null; then
        echo "---- screen ----" >&2
        tmux capture-pane -p -t "$T" >&2 || true
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

# The pane the helpers below look at and type into.
T=$SESSION
screen() { tmux capture-pane -p -t "$T"; }
has() { screen | grep -q -- "$1"; }
has_re() { screen | grep -qE -- "$1"; }
lacks() { ! has "$1"; }
keys() { tmux send-keys -t "$T" "$@"; }
pane() { tmux display-message -p -t "$T" "$1"; }

# wait_for SECONDS DESCRIPTION TEST-COMMAND...: poll every 0.2 s.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    fail "timed out after ${secs}s waiting for: $what"
}

# No backtrace settings from outside: the panic report is then a few lines, all on the screen.
tmux new-session -d -s "$SESSION" -x 120 -y 40 \
    "env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE PS1='term-shell\$ ' bash --norc --noprofile"
wait_for 10 "the shell" has 'term-shell\$'
# After the TUI: its exit status, then whether the tty is raw, from the same command line.
keys "ttystate() { if stty -a | grep -qwE -- '-icanon|-echo'; then echo tty=raw; else echo tty=cooked; fi; }" Enter

# start ENV ARGS...: run the TUI (ENV: assignments, may be empty).
start() {
    local env=$1
    shift
    keys "clear; $env '$BIN' --graphics ${GRAPHICS:-halfblocks} --out '$OUT' $*; echo term-exit=\$?; ttystate" Enter
}

# The TUI's pid: the shell's child.
tui_pid() { pgrep -P "$(pane '#{pane_pid}')" | head -1; }

# came_back CODE: the program exited with CODE and gave the terminal back.
# (The typed command line shows `term-exit=$?`: only a digit after `=` is the program's status.)
came_back() {
    wait_for 20 "the program to exit" has_re "^term-exit=[0-9]+$"
    wait_for 10 "the tty state" has_re "^tty=(raw|cooked)$"
    has "^term-exit=$1\$" || fail "exit status $(screen | grep -o 'term-exit=[0-9]*'), expected $1"
    has "^tty=cooked" || fail "the tty was left raw (stty -a shows -icanon/-echo)"
    [ "$(pane '#{alternate_on}')" = 0 ] || fail "the terminal is still in the alternate screen"
    [ "$(pane '#{cursor_flag}')" = 1 ] || fail "the cursor is still hidden"
    keys "echo alive-\$((6*7))" Enter
    wait_for 10 "the shell to answer" has "^alive-42"
}

ready() { has "model fake" || has "model .*micro"; }

# A long run: run 1 of exercise 1 edited to STEPS steps (the fake takes 40 ms a step), rerun.
long_run() {
    keys e
    wait_for 10 "the run editor" has "steps"
    keys Tab BSpace BSpace "$1" Enter
    wait_for 10 "the edit to apply" has "run DDPM $1 changed"
    keys R
    wait_for 20 "the long run to step" has "▶ DDPM $1  step [0-9]"
}

echo "tui_terminal: 1. refusals"
start "TERM=dumb" --fake-backend
came_back 1
has "TERM=dumb, which cannot show the interactive exercises" || fail "no TERM=dumb refusal"
has "Fix: run speedscape in a full terminal" || fail "the TERM=dumb refusal lacks its fix"
keys "clear; '$BIN' --fake-backend --out '$OUT' | cat; echo term-exit=\${PIPESTATUS[0]}; ttystate" Enter
came_back 1
has "but stdout is not one" || fail "no refusal for stdout a pipe"
has "speedscape exercise N" || fail "the refusal does not name the headless commands"
start "" --fake-backend "</dev/null"
came_back 1
has "but stdin is not one" || fail "no refusal for stdin /dev/null"

echo "tui_terminal: 2. graphics auto, then resized during a run"
GRAPHICS=auto start "" --fake-backend
wait_for 20 "the TUI to start" ready
# tmux has no image protocol: the query goes unanswered and the TUI says it draws half-blocks.
keys "?"
wait_for 10 "the help" has "any key closes this"
has_re "graphics [a-z0-9]+ \((detected|the terminal did not answer: halfblocks)\)" ||
    fail "the help does not say which graphics were picked and how"
keys Escape
long_run 250
tmux resize-window -t "$SESSION" -x 40 -y 10
wait_for 10 "the too-small screen" has "terminal too small: 40×10"
has "speedscape needs at least 80×24" || fail "the too-small screen does not say the size needed"
tmux resize-window -t "$SESSION" -x 100 -y 30
wait_for 10 "the layout at 100×30" has "Exercises"
[ "$(pane '#{pane_width}x#{pane_height}')" = 100x30 ] || fail "the pane is not 100×30"
screen | tail -1 | grep -q "r run · R rerun" || fail "the hints are not on the last line of 30"
screen | head -1 | grep -q "speedscape" || fail "the header is not on the first line"
has "▶ DDPM 250  step" || fail "the run is no longer going after the resizes"
wait_for 40 "the run to finish after the resizes" has "^✓ DDPM 250 "
keys q
came_back 0
tmux resize-window -t "$SESSION" -x 120 -y 40

echo "tui_terminal: 3. signals during a run"
for sig in TERM:143 INT:130 HUP:129; do
    name=${sig%%:*} code=${sig##*:}
    start "" --fake-backend
    wait_for 20 "the TUI to start" ready
    long_run 999
    pid=$(tui_pid)
    [ -n "$pid" ] || fail "no speedscape process"
    kill "-$name" "$pid"
    came_back "$code"
    # Printed after the alternate screen was left, so it stays on the shell's screen.
    has "speedscape: stopped by SIG$name: the run under way (DDPM 999) was cancelled" ||
        fail "no 'stopped by SIG$name' message naming the cancelled run"
    [ -z "$(ls -A "$OUT")" ] || fail "SIG$name left files in the save folder: $(ls -A "$OUT")"
done

echo "tui_terminal: 3b. the terminal closing during a run (the kernel's SIGHUP)"
tmux new-window -d -t "$SESSION" -n gone "'$BIN' --fake-backend --graphics halfblocks --out '$OUT'"
T="$SESSION:gone"
wait_for 20 "the TUI to start in its own window" ready
pid=$(pane '#{pane_pid}')
long_run 999
tmux kill-window -t "$T"
T=$SESSION
gone() { ! kill -0 "$pid" 2>/dev/null; }
wait_for 15 "speedscape to exit once its terminal closed" gone
[ -z "$(ls -A "$OUT")" ] || fail "the hangup left files in the save folder: $(ls -A "$OUT")"

echo "tui_terminal: 4. a panic on the UI thread"
start "SPEEDSCAPE_TEST_PANIC=ui" --fake-backend
wait_for 20 "the TUI to start" ready
keys "!"
wait_for 20 "the program to exit" has_re "^term-exit=[0-9]+$"
has "The application panicked" || fail "no panic report"
has "SPEEDSCAPE_TEST_PANIC=ui: a deliberate panic on the UI thread" || fail "the panic's message is missing"
has "This is a bug in speedscape" || fail "no hint to report the bug"
came_back 101

echo "tui_terminal: 5. a panic on the inference thread (micro model)"
start "SPEEDSCAPE_TEST_PANIC=worker"
wait_for 60 "the worker to be ready" ready
keys r
wait_for 30 "the run's error" has "failed: the inference thread panicked: SPEEDSCAPE_TEST_PANIC=worker"
[ "$(pane '#{alternate_on}')" = 1 ] || fail "the worker's panic tore the TUI down"
has "The application panicked" && fail "the worker's panic was printed over the TUI"
keys q
came_back 0
screen | grep -q "speedscape: thread 'speedscape-worker' panicked at .*SPEEDSCAPE_TEST_PANIC=worker" ||
    fail "the worker's panic was not reported at exit"

echo "tui_terminal: 6. 1000 random keys during runs (seed $SEED)"
start "" --fake-backend
wait_for 20 "the TUI to start" ready
keys r
RANDOM=$SEED
pool=(a b c d e f g h i j k l m n o p r s t u v w x y z
    A B C D E F G H I J K L M N O P R S T U V W X Y Z
    0 1 2 3 4 5 6 7 8 9 . , - ? Space Enter Escape Tab BTab BSpace Up Down Left Right)
sent=0
while ((sent < 1000)); do
    batch=()
    for _ in $(seq 25); do batch+=("${pool[RANDOM % ${#pool[@]}]}"); done
    keys "${batch[@]}"
    sent=$((sent + 25))
    sleep 0.02
done
[ -n "$(tui_pid)" ] || fail "speedscape died under the random keys"
has_re "^term-exit=[0-9]" && fail "speedscape exited under the random keys"
# Back to the normal mode (esc closes every form), then the help overlay answers.
keys Escape Escape
sleep 0.3
keys Escape "?"
wait_for 10 "the help overlay after the random keys" has "any key closes this"
keys Escape
wait_for 10 "the help to close" lacks "any key closes this"
keys q
came_back 0

echo "tui_terminal: ok"
