#!/usr/bin/env bash
# Installs the real OCI registry Steward's tests push to and pull from
# (SPEC §7): Debian's `docker-registry` (distribution 2.8), unpacked with
# `apt-get download` + `dpkg-deb -x`. Never `apt-get install`: the package's
# service would start listening on every interface. The tests start the
# binary themselves, on 127.0.0.1, and stop it by PID.
#
# Output: ${STEWARD_CACHE:-$HOME/.cache/steward}/registry/usr/bin/docker-registry
# stdout: the binary's absolute path (progress goes to stderr).
# Idempotent: on a warm cache it only checks the binary and exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

ROOT="$CACHE/registry"
BIN="$ROOT/usr/bin/docker-registry"

say() { echo "docker-registry: $*" >&2; }
warm() { [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; }
result() { echo "$BIN"; }

exit_if_warm_else_lock "$ROOT/.lock"
export DEBIAN_FRONTEND=noninteractive

WORK="$(mktemp -d "$ROOT/download.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
if ! apt-get download docker-registry >&2; then
  say "package not found in the apt lists; running apt-get update"
  $SUDO apt-get update >&2
  apt-get download docker-registry >&2
fi
dpkg-deb -x docker-registry_*.deb "$ROOT"
warm || { say "unpacked, but $BIN --version fails"; exit 1; }
say "installed $("$BIN" --version)"
result
