#!/usr/bin/env bash
# Builds the current Kubernetes control plane used by Steward's end-to-end
# tests: kube-apiserver, kube-scheduler, kube-controller-manager and kubectl of
# Kubernetes v1.37.2, and etcd v3.6, all from the Go module proxy with the
# machine's Go (>= 1.26). No kubelet.
#
# What is built is pinned by two small Go modules next to this script:
#   kubernetes-1.37/  requires k8s.io/kubernetes v1.37.2 and replaces each of its
#                     staging modules (k8s.io/api, client-go, ...) with v0.37.2;
#                     the four commands are its `tool`s
#   etcd/             a `main` calling go.etcd.io/etcd/server/v3's etcdmain.Main
#                     (etcd's client versions don't fit Kubernetes' module graph)
# Their go.sum files pin every module; nothing is vendored.
#
# Output: ${STEWARD_CACHE:-$HOME/.cache/steward}/kubernetes-1.37/bin/
# stdout: one absolute binary path per line (progress goes to stderr).
# Idempotent: on a warm cache it only checks the binaries and exits.
# Never starts a server, never binds a port.
#
# Go's module and build caches stay where Go keeps them by default
# ($GOMODCACHE, ~/go/pkg/mod, about 1 GB; $GOCACHE, ~/.cache/go-build, about 4 GB after this
# build): a rebuild after a recipe change then only relinks. A cold build
# compiles about 3,000 packages: 20-40 min on 2 busy cores.
set -euo pipefail

# Bump when the build recipe changes: a different marker forces a rebuild.
# (A change to either module's go.mod or go.sum forces one too.)
SCRIPT_VERSION=1
K8S_VERSION=v1.37.2

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
K8S_MOD="$HERE/kubernetes-1.37"
ETCD_MOD="$HERE/etcd"
ROOT="$CACHE/kubernetes-1.37"
BIN="$ROOT/bin"
LOG="$ROOT/build.log"
MARKER="$BIN/.built-version"
K8S_CMDS=(kube-apiserver kube-scheduler kube-controller-manager kubectl)
ALL_BINS=("${K8S_CMDS[@]}" etcd)

say() { echo "kubernetes-1.37: $*" >&2; }

# Prints a binary's version (kubectl has no --version flag).
version_of() {
  if [[ "$(basename "$1")" == kubectl ]]; then "$1" version --client; else "$1" --version; fi
}

# The recipe's key: this script's version and both modules' requirements.
recipe() {
  local sum
  sum="$(cat "$K8S_MOD/go.mod" "$K8S_MOD/go.sum" "$ETCD_MOD/go.mod" "$ETCD_MOD/go.sum" \
    "$ETCD_MOD/main.go" | sha256sum | cut -c1-16)"
  echo "script=$SCRIPT_VERSION modules=$sum"
}

# Warm cache = marker of this recipe + every binary answers --version.
warm() {
  [[ -f "$MARKER" ]] || return 1
  [[ "$(head -n1 "$MARKER")" == "$(recipe)" ]] || return 1
  local b
  for b in "${ALL_BINS[@]}"; do
    [[ -x "$BIN/$b" ]] && version_of "$BIN/$b" >/dev/null 2>&1 || return 1
  done
}

result() {
  local b
  for b in "${ALL_BINS[@]}"; do echo "$BIN/$b"; done
}

exit_if_warm_else_lock "$ROOT/.lock"
mkdir -p "$BIN"

# The build steps run in a subshell whose output goes to the log; set -e stays
# in force there because the subshell is not part of an if/&&/|| list.
build() {
  set -euo pipefail
  echo "=== $(date -u +%FT%TZ) steward kubernetes-1.37 $(recipe)"

  # The machine's Go, never a newer one fetched behind our back; both modules
  # ask for go 1.26.0. -mod=mod: resolve from go.mod/go.sum (the proxy on a
  # cold module cache), never from a vendor/ directory. No cgo: static binaries.
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  command -v go >/dev/null || { echo "no 'go' on PATH: Go >= 1.26 is needed"; exit 1; }
  local gov
  gov="$(go env GOVERSION)"
  echo "go: $(command -v go) $gov; GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE)"
  if ! printf '%s\n' go1.26 "$gov" | sort -V -C; then
    echo "$gov is too old: Kubernetes $K8S_VERSION needs Go >= 1.26"
    exit 1
  fi

  # --- Kubernetes ------------------------------------------------------------
  # kube::version::ldflags of Kubernetes' hack/lib/version.sh, with the values
  # of the release: `--version`, kubectl's skew checks and the discovery API
  # then report v1.37.2. buildDate is the release's time (the proxy's .info),
  # so the binaries don't depend on when they were built. The module proxy
  # carries no commit id, so gitCommit stays empty.
  local info built minor ldflags=() pkg key val c
  info="$(cd "$K8S_MOD" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
  built="$(sed -n 's/^.*"Info": "\(.*\)",*$/\1/p' <<<"$info")"
  built="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$built")"
  [[ -n "$built" ]] || built=1970-01-01T00:00:00Z
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for key in "gitVersion=$K8S_VERSION" gitMajor=1 "gitMinor=$minor" gitCommit= \
               gitTreeState=clean "buildDate=$built"; do
      ldflags+=("-X '$pkg.$key'")
    done
  done
  # One `go build` for the four commands, so their shared packages compile once.
  # nice -n 19: yield the cores to whoever else is compiling.
  local t0=$SECONDS
  (
    cd "$K8S_MOD"
    nice -n 19 go build -o "$BIN/" -ldflags "-s -w ${ldflags[*]}" \
      "${K8S_CMDS[@]/#/k8s.io/kubernetes/cmd/}"
  )
  echo "kubernetes build took $(( SECONDS - t0 ))s"

  # --- etcd --------------------------------------------------------------------
  t0=$SECONDS
  (cd "$ETCD_MOD" && nice -n 19 go build -o "$BIN/etcd" -ldflags "-s -w" .)
  echo "etcd build took $(( SECONDS - t0 ))s"

  for c in "${ALL_BINS[@]}"; do version_of "$BIN/$c"; done
  {
    recipe
    echo "kubernetes=$K8S_VERSION"
    echo "etcd=$(cd "$ETCD_MOD" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
    echo "go=$gov"
    echo "built=$(date -u +%FT%TZ)"
  } > "$MARKER"
  echo "=== done"
}

say "building into $BIN (20-40 min on a cold Go cache, 2 cores); log: $LOG"
rm -f "$MARKER"
run_logged 60 build
warm || { say "binaries built but the check failed; see $LOG"; exit 1; }
say "done"
result
