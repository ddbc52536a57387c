#!/usr/bin/env bash
# Installs the ORAS Python SDK (`oras` from PyPI) into a virtualenv for the
# interoperability tests: ${STEWARD_CACHE:-$HOME/.cache/steward}/oras-venv.
# The venv also holds `bcrypt`, which writes the htpasswd file of the
# registry the credential tests start.
# stdout: the venv's python (progress goes to stderr). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

VENV="$CACHE/oras-venv"
PY="$VENV/bin/python"
# The SDK version the tests were written against.
ORAS_VERSION="0.2.43"
BCRYPT_VERSION="4.3.0"

say() { echo "oras: $*" >&2; }
warm() { [[ -x "$PY" ]] && "$PY" -c "import oras.client, bcrypt" >/dev/null 2>&1; }
result() { echo "$PY"; }

exit_if_warm_else_lock "$CACHE/.oras-venv.lock"

if ! python3 -m venv "$VENV" >&2; then
  say "python3 cannot create a venv; installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update >&2
  $SUDO apt-get install -y python3-venv >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
fi
"$VENV/bin/pip" install --quiet "oras==$ORAS_VERSION" "bcrypt==$BCRYPT_VERSION" >&2
warm || { say "installed, but 'import oras.client, bcrypt' fails"; exit 1; }
say "installed oras $ORAS_VERSION in $VENV"
result
