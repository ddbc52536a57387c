#!/usr/bin/env bash
# Builds Steward's container image (deploy/image/Containerfile): a static
# steward for x86_64-unknown-linux-musl and the built-in policies, FROM
# scratch, with podman (or buildah).
#
# Usage: deploy/image/build.sh [IMAGE]   (default: steward:<version>, the bundle's)
#   STEWARD_IMAGE_PROFILE=PROFILE      cargo profile (default release; the image
#                                      test builds with image-test, unoptimised)
#   STEWARD_IMAGE_CONTEXT=DIR          also keep the staged context there
#   STEWARD_IMAGE_TARGET_DIR=DIR       cargo's target directory for the musl build
#                                      (default: $CARGO_TARGET_DIR or target/)
# Needs: the musl target (`rustup target add x86_64-unknown-linux-musl`),
# musl-gcc (Debian: musl-tools) for the C parts, and podman or buildah.
# stdout: the image name (progress goes to stderr).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
IMAGE="${1:-steward:$VERSION}"
PROFILE="${STEWARD_IMAGE_PROFILE:-release}"
TARGET=x86_64-unknown-linux-musl
TARGET_DIR="${STEWARD_IMAGE_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}"
say() { echo "image: $*" >&2; }

if command -v podman >/dev/null; then BUILD=(podman build)
elif command -v buildah >/dev/null; then BUILD=(buildah bud)
else say "neither podman nor buildah is installed (Debian: apt-get install podman)"; exit 1; fi

say "building steward for $TARGET ($PROFILE)"
cd "$ROOT"
CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}" \
  cargo build --profile "$PROFILE" --target "$TARGET" --target-dir "$TARGET_DIR" \
  -p steward --bin steward >&2

[[ "$PROFILE" == dev ]] && OUT=debug || OUT="$PROFILE"
CONTEXT="${STEWARD_IMAGE_CONTEXT:-$(mktemp -d)}"
[[ -n "${STEWARD_IMAGE_CONTEXT:-}" ]] || trap 'rm -rf "$CONTEXT"' EXIT
say "building the policies into $CONTEXT/policies"
cargo xtask policies "$CONTEXT/policies" >&2
cp "$TARGET_DIR/$TARGET/$OUT/steward" "$CONTEXT/steward"
cp /etc/ssl/certs/ca-certificates.crt "$CONTEXT/ca-certificates.crt"
cp "$ROOT/deploy/image/Containerfile" "$CONTEXT/Containerfile"
say "building $IMAGE with ${BUILD[*]}"
"${BUILD[@]}" --tag "$IMAGE" --file "$CONTEXT/Containerfile" "$CONTEXT" >&2
echo "$IMAGE"
