#!/usr/bin/env bash
# The binary users build has no test hooks: built without the `test-hooks` feature (test.sh:
# `cargo build --bin speedscape`), clap rejects the hidden `--fake-backend` flag (exit 2), and
# neither the fake backend nor `SPEEDSCAPE_TEST_PANIC` is compiled in (their strings are absent
# from the file). Fails on a build with the feature.
#
#   SPEEDSCAPE_BIN   the binary (default target/debug/speedscape)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SPEEDSCAPE_BIN:-target/debug/speedscape}

fail() {
    echo "no_test_hooks: FAIL: $*" >&2
    exit 1
}

[ -x "$BIN" ] || fail "$BIN is not an executable (cargo build --bin speedscape builds it)"

# stdin /dev/null and stdout a pipe: a binary that has the flag refuses to open the TUI (exit 1).
code=0
err=$("$BIN" --fake-backend 2>&1 </dev/null >/dev/null) || code=$?
[ "$code" = 2 ] || fail "--fake-backend exited $code, not 2 (clap's usage error): $err"
grep -qF "unexpected argument '--fake-backend'" <<<"$err" ||
    fail "--fake-backend was not rejected as an unexpected argument: $err"

# Strings only the hooks have: the panic hooks' variable, the fake backend's device name and the
# hidden flag's help.
for marker in "SPEEDSCAPE_TEST_PANIC" "fake backend (test only)" "stand-in backend"; do
    n=$(grep -a -c -F -- "$marker" "$BIN" || true)
    [ "$n" = 0 ] || fail "$BIN contains \"$marker\" ($n lines): a test hook is built in"
done
echo "no_test_hooks: ok ($BIN has no test hooks)"
