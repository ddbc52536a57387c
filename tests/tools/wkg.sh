#!/usr/bin/env bash
# Installs `wkg` (the Wasm package tools CLI of the Bytecode Alliance, from
# crates.io) for the OCI interop tests:
# ${STEWARD_CACHE:-$HOME/.cache/steward}/wkg-<version>/bin/wkg.
# stdout: the binary's path (progress goes to stderr). Idempotent; a lock
# makes concurrent callers wait for one build (a few minutes on 2 cores).
set -euo pipefail

# The version the tests were written against; --locked builds it with the
# dependency versions it was released with.
WKG_VERSION="0.16.1"
CACHE="${STEWARD_CACHE:-$HOME/.cache/steward}"
ROOT="$CACHE/wkg-$WKG_VERSION"
BIN="$ROOT/bin/wkg"
LOG="$ROOT/build.log"

say() { echo "wkg: $*" >&2; }
warm() { [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; }

if warm; then echo "$BIN"; exit 0; fi
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
if warm; then echo "$BIN"; exit 0; fi

say "building wkg $WKG_VERSION into $ROOT (log: $LOG)"
set +e
# Its own target directory, removed afterwards: only the binary is kept.
# --debug: the tests run it for a few pushes and pulls, and an unoptimised
# build takes half the CPU of a release one (about 4 CPU-minutes instead of 8).
# nice -n 19: yield the cores to whoever else is compiling.
nice -n 19 cargo install wkg --version "$WKG_VERSION" --locked --debug --root "$ROOT" \
  --target-dir "$ROOT/build" >>"$LOG" 2>&1
rc=$?
set -e
rm -rf "$ROOT/build"
if (( rc != 0 )); then
  say "FAILED (exit $rc); last lines of $LOG:"
  tail -n 40 "$LOG" >&2
  exit "$rc"
fi
warm || { say "installed, but '$BIN --version' fails; see $LOG"; exit 1; }
echo "$BIN"
