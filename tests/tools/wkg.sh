#!/usr/bin/env bash
# Installs `wkg` (the Wasm package tools CLI of the Bytecode Alliance, from
# crates.io) for the OCI interop tests:
# ${STEWARD_CACHE:-$HOME/.cache/steward}/wkg-<version>/bin/wkg.
# stdout: the binary's path (progress goes to stderr). Idempotent; a lock
# makes concurrent callers wait for one build (a few minutes on 2 cores).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# The version the tests were written against; --locked builds it with the
# dependency versions it was released with.
WKG_VERSION="0.16.1"
ROOT="$CACHE/wkg-$WKG_VERSION"
BIN="$ROOT/bin/wkg"
LOG="$ROOT/build.log"

say() { echo "wkg: $*" >&2; }
warm() { [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; }
result() { echo "$BIN"; }

exit_if_warm_else_lock "$ROOT/.lock"

# Its own target directory, removed afterwards (also on failure): only the
# binary is kept. --debug: the tests run it for a few pushes and pulls, and
# an unoptimised build takes half the CPU of a release one (about 4
# CPU-minutes instead of 8). nice -n 19: yield the cores to whoever else is
# compiling.
install_wkg() {
  local rc=0
  nice -n 19 cargo install wkg --version "$WKG_VERSION" --locked --debug --root "$ROOT" \
    --target-dir "$ROOT/build" || rc=$?
  rm -rf "$ROOT/build"
  return "$rc"
}

say "building wkg $WKG_VERSION into $ROOT (log: $LOG)"
run_logged 40 install_wkg
warm || { say "installed, but '$BIN --version' fails; see $LOG"; exit 1; }
result
