#!/usr/bin/env bash
# Installs what building and running Steward's image needs (Debian
# packages; apt-get, sudo only when not root): podman and runc to build and
# run it, musl-tools (musl-gcc) for the static binary's C parts, and the
# Rust target x86_64-unknown-linux-musl.
# stdout: podman's path (progress goes to stderr). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

say() { echo "image-tools: $*" >&2; }
warm() {
  command -v podman >/dev/null && command -v runc >/dev/null && command -v musl-gcc >/dev/null \
    && rustup target list --installed | grep -qx x86_64-unknown-linux-musl
}
result() { command -v podman; }

exit_if_warm_else_lock "$CACHE/.image-tools.lock"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v musl-gcc >/dev/null; then
  say "installing podman, runc and musl-tools"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update >&2
  $SUDO apt-get install -y podman runc musl-tools >&2
fi
rustup target add x86_64-unknown-linux-musl >&2
warm || { say "installed, but podman, runc, musl-gcc or the musl target is missing"; exit 1; }
result
