#!/usr/bin/env bash
# Builds one Go command-line tool the tests drive for real, from the Go module
# proxy with the machine's Go (>= 1.26): `go-tool.sh NAME` builds the `tool`
# of the small module tests/tools/NAME/ (its go.mod and go.sum pin every
# module; nothing is vendored):
#   oras    the ORAS CLI (oras.land/oras)
#   helm    Helm v4 (helm.sh/helm/v4)
#   cosign  cosign v3 (github.com/sigstore/cosign/v3)
#
# Output: ${STEWARD_CACHE:-$HOME/.cache/steward}/NAME-<recipe>/bin/NAME, where
# <recipe> hashes this script and the module, so a change rebuilds.
# stdout: the binary's absolute path (progress goes to stderr).
# Idempotent: on a warm cache it only checks the binary and exits.
# Go's module and build caches are Go's defaults, shared with the Kubernetes
# builds (Helm shares client-go and apimachinery with them).
set -euo pipefail

NAME="${1:?usage: go-tool.sh oras|helm|cosign}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
MOD="$HERE/$NAME"
[[ -f "$MOD/go.mod" ]] || { echo "go-tool: no module $MOD/go.mod" >&2; exit 2; }
RECIPE="$(cat "${BASH_SOURCE[0]}" "$MOD/go.mod" "$MOD/go.sum" | sha256sum | cut -c1-12)"
ROOT="$CACHE/$NAME-$RECIPE"
BIN="$ROOT/bin/$NAME"
LOG="$ROOT/build.log"

say() { echo "$NAME: $*" >&2; }
warm() { [[ -x "$BIN" && -f "$ROOT/.built" ]] && "$BIN" version >/dev/null 2>&1; }
result() { echo "$BIN"; }

exit_if_warm_else_lock "$ROOT/.lock"
mkdir -p "$ROOT/bin"

build() {
  set -euo pipefail
  echo "=== $(date -u +%FT%TZ) steward $NAME recipe $RECIPE"
  # The machine's Go, never a newer one fetched behind our back; -mod=mod
  # resolves from go.mod/go.sum (the proxy on a cold module cache). No cgo:
  # static binaries. -trimpath and -s -w keep them small and reproducible.
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  command -v go >/dev/null || { echo "no 'go' on PATH: Go >= 1.26 is needed"; exit 1; }
  echo "go: $(go env GOVERSION); GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE)"
  local pkg t0=$SECONDS
  pkg="$(sed -n 's/^tool //p' "$MOD/go.mod")"
  # nice -n 19: yield the cores to whoever else is compiling.
  (cd "$MOD" && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$BIN" "$pkg")
  echo "build took $(( SECONDS - t0 ))s"
  "$BIN" version
  date -u +%FT%TZ > "$ROOT/.built"
  echo "=== done"
}

say "building into $BIN (log: $LOG)"
run_logged 40 build
warm || { say "built, but '$BIN version' fails; see $LOG"; exit 1; }
result
