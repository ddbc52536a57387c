#!/usr/bin/env bash
# Builds the real Kubernetes control plane used by Steward's end-to-end tests
# (SPEC §7): kube-apiserver, kube-scheduler and kube-controller-manager from
# Debian's `kubernetes` source package (1.20.2, bullseye) with Debian's Go
# (bookworm's golang-1.19-go, called by its directory: a newer `go` earlier on
# PATH rejects some of that tree's vendored code), plus `etcd` from Debian's
# `etcd-server` package. No kubelet. Also kubectl
# from the same tree: its `kubectl kustomize` (kustomize v2.0.3) checks that
# deploy/ renders on the oldest kubectl the bundle supports.
#
# Output: ${STEWARD_CACHE:-$HOME/.cache/steward}/kubernetes-1.20/bin/
# stdout: one absolute binary path per line (progress goes to stderr).
# Idempotent: on a warm cache it only checks the binaries and exits.
# Never starts a server, never binds a port, never enables a system service.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# Bump when the build recipe changes: a different marker forces a rebuild.
SCRIPT_VERSION=3

ROOT="$CACHE/kubernetes-1.20"
BIN="$ROOT/bin"
SRC="$ROOT/src"
LOG="$ROOT/build.log"
MARKER="$BIN/.built-version"
K8S_CMDS=(kube-apiserver kube-scheduler kube-controller-manager kubectl)
ALL_BINS=("${K8S_CMDS[@]}" etcd)
SRC_PKG="kubernetes/bullseye"   # bookworm has no kubernetes source; bullseye has 1.20.x
SOURCES_FILE=/etc/apt/sources.list.d/steward-kubernetes-src.sources
DEBIAN_GO_PKG=golang-1.19-go    # bookworm's Go; builds 1.20.2 with the patch below

say() { echo "kubernetes-binaries: $*" >&2; }

# Prints a binary's version (kubectl has no --version flag).
version_of() {
  if [[ "$(basename "$1")" == kubectl ]]; then "$1" version --client; else "$1" --version; fi
}

# Warm cache = marker from this script version + every binary answers --version.
warm() {
  [[ -f "$MARKER" ]] || return 1
  [[ "$(head -n1 "$MARKER")" == "script=$SCRIPT_VERSION" ]] || return 1
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
mkdir -p "$SRC" "$BIN"
export DEBIAN_FRONTEND=noninteractive

# The build steps run in a subshell whose output goes to the log; set -e stays
# in force there because the subshell is not part of an if/&&/|| list.
build() {
  set -euo pipefail
  echo "=== $(date -u +%FT%TZ) steward kubernetes-binaries script=$SCRIPT_VERSION"

  # Build tools only (not the package's full build-deps: those want
  # golang-1.15-go, which bookworm doesn't have). dpkg-dev provides
  # dpkg-source for `apt-get source`; patch for the vendored-code fix below.
  local pkgs=("$DEBIAN_GO_PKG" make rsync dpkg-dev patch xz-utils ca-certificates) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done

  # deb-src for bullseye, where Debian's kubernetes 1.20 source lives.
  local want
  want=$'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg'
  local need_update=0
  if [[ ! -f "$SOURCES_FILE" ]] || [[ "$(cat "$SOURCES_FILE")" != "$want" ]]; then
    printf '%s\n' "$want" | $SUDO tee "$SOURCES_FILE" >/dev/null
    need_update=1
  fi
  apt-get source --print-uris "$SRC_PKG" >/dev/null 2>&1 || need_update=1
  if (( need_update )) || (( ${#missing[@]} )); then $SUDO apt-get update; fi
  if (( ${#missing[@]} )); then
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
  fi

  # Debian's Go by its directory (/usr/lib/go-1.19/bin), whatever `go` comes
  # first on PATH (a machine's current Go in /usr/local/go/bin, say).
  local debian_go
  debian_go="$(dpkg-query -L "$DEBIAN_GO_PKG" 2>/dev/null | grep -E '^/usr/lib/go-[0-9.]+/bin/go$' | head -n1 || true)"
  if [[ -z "$debian_go" || ! -x "$debian_go" ]]; then
    echo "Debian's Go not found: package $DEBIAN_GO_PKG installs no /usr/lib/go-*/bin/go"
    exit 1
  fi
  export PATH="$(dirname "$debian_go"):$PATH"
  [[ "$(command -v go)" == "$debian_go" ]] || { echo "go on PATH is not $debian_go"; exit 1; }
  local go_version
  go_version="$(go version)"
  echo "$go_version ($debian_go)"

  # --- kubernetes source -------------------------------------------------
  # apt verifies every file against the signed Sources index. This mirror
  # serves the .orig.tar.gz (upstream v1.20.2 with vendor/) but 404s the
  # .dsc and .debian.tar.xz, so `apt-get source` can fail after fetching the
  # orig tarball; then we unpack that (checksum re-checked here). Debian's
  # debian/ dir only packages kubectl, so nothing needed is lost.
  local dl="$SRC/download" uris orig sha tree
  mkdir -p "$dl"
  uris="$(apt-get source --print-uris "$SRC_PKG")"
  echo "$uris"
  rm -rf "$SRC/tree"
  mkdir -p "$SRC/tree"
  if (cd "$dl" && apt-get -o APT::Sandbox::User=root source "$SRC_PKG") \
     && tree="$(find "$dl" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)" \
     && [[ -n "$tree" ]]; then
    mv "$tree" "$SRC/tree/kubernetes"
  else
    echo "apt-get source incomplete; falling back to the verified .orig.tar.gz"
    orig="$(awk '$2 ~ /\.orig\.tar\.gz$/ {print $2}' <<<"$uris")"
    sha="$(awk '$2 ~ /\.orig\.tar\.gz$/ {sub(/^SHA256:/, "", $4); print $4}' <<<"$uris")"
    [[ -n "$orig" && -f "$dl/$orig" ]] || { echo "orig tarball not downloaded"; exit 1; }
    echo "$sha  $dl/$orig" | sha256sum -c -
    tar -xzf "$dl/$orig" -C "$SRC/tree"
    mv "$SRC/tree"/kubernetes-* "$SRC/tree/kubernetes"
  fi
  tree="$SRC/tree/kubernetes"

  # Go >= 1.18 changed reflect.mapiterinit; the vendored reflect2 v1.0.1
  # (used by json-iterator) then corrupts memory when iterating maps. Apply
  # the upstream reflect2 v1.0.2 fix (go_above_118.go) to the vendored copy.
  if [[ ! -f "$tree/vendor/github.com/modern-go/reflect2/go_above_118.go" ]]; then
    (cd "$tree" && patch -p1 --forward) <<'PATCH'
diff -ruN a/vendor/github.com/modern-go/reflect2/go_above_118.go b/vendor/github.com/modern-go/reflect2/go_above_118.go
--- a/vendor/github.com/modern-go/reflect2/go_above_118.go
+++ b/vendor/github.com/modern-go/reflect2/go_above_118.go
@@ -0,0 +1,23 @@
+//+build go1.18
+
+package reflect2
+
+import (
+	"unsafe"
+)
+
+// m escapes into the return value, but the caller of mapiterinit
+// doesn't let the return value escape.
+//go:noescape
+//go:linkname mapiterinit reflect.mapiterinit
+func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)
+
+func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
+	var it hiter
+	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
+	return &UnsafeMapIterator{
+		hiter:      &it,
+		pKeyRType:  type2.pKeyRType,
+		pElemRType: type2.pElemRType,
+	}
+}
diff -ruN a/vendor/github.com/modern-go/reflect2/go_below_118.go b/vendor/github.com/modern-go/reflect2/go_below_118.go
--- a/vendor/github.com/modern-go/reflect2/go_below_118.go
+++ b/vendor/github.com/modern-go/reflect2/go_below_118.go
@@ -0,0 +1,21 @@
+//+build !go1.18
+
+package reflect2
+
+import (
+	"unsafe"
+)
+
+// m escapes into the return value, but the caller of mapiterinit
+// doesn't let the return value escape.
+//go:noescape
+//go:linkname mapiterinit reflect.mapiterinit
+func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) (val *hiter)
+
+func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
+	return &UnsafeMapIterator{
+		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),
+		pKeyRType:  type2.pKeyRType,
+		pElemRType: type2.pElemRType,
+	}
+}
diff -ruN a/vendor/github.com/modern-go/reflect2/unsafe_link.go b/vendor/github.com/modern-go/reflect2/unsafe_link.go
--- a/vendor/github.com/modern-go/reflect2/unsafe_link.go
+++ b/vendor/github.com/modern-go/reflect2/unsafe_link.go
@@ -25,12 +25,6 @@
 //go:noescape
 func mapaccess(rtype unsafe.Pointer, m unsafe.Pointer, key unsafe.Pointer) (val unsafe.Pointer)
 
-// m escapes into the return value, but the caller of mapiterinit
-// doesn't let the return value escape.
-//go:noescape
-//go:linkname mapiterinit reflect.mapiterinit
-func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter
-
 //go:noescape
 //go:linkname mapiternext reflect.mapiternext
 func mapiternext(it *hiter)
@@ -42,9 +36,21 @@
 // If you modify hiter, also change cmd/internal/gc/reflect.go to indicate
 // the layout of this structure.
 type hiter struct {
-	key   unsafe.Pointer // Must be in first position.  Write nil to indicate iteration end (see cmd/internal/gc/range.go).
-	value unsafe.Pointer // Must be in second position (see cmd/internal/gc/range.go).
-	// rest fields are ignored
+	key         unsafe.Pointer
+	value       unsafe.Pointer
+	t           unsafe.Pointer
+	h           unsafe.Pointer
+	buckets     unsafe.Pointer
+	bptr        unsafe.Pointer
+	overflow    *[]unsafe.Pointer
+	oldoverflow *[]unsafe.Pointer
+	startBucket uintptr
+	offset      uint8
+	wrapped     bool
+	B           uint8
+	i           uint8
+	bucket      uintptr
+	checkBucket uintptr
 }
 
 // add returns p+x.
diff -ruN a/vendor/github.com/modern-go/reflect2/unsafe_map.go b/vendor/github.com/modern-go/reflect2/unsafe_map.go
--- a/vendor/github.com/modern-go/reflect2/unsafe_map.go
+++ b/vendor/github.com/modern-go/reflect2/unsafe_map.go
@@ -107,14 +107,6 @@
 	return type2.UnsafeIterate(objEFace.data)
 }
 
-func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
-	return &UnsafeMapIterator{
-		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),
-		pKeyRType:  type2.pKeyRType,
-		pElemRType: type2.pElemRType,
-	}
-}
-
 type UnsafeMapIterator struct {
 	*hiter
 	pKeyRType  unsafe.Pointer
PATCH
  fi

  # --- build ---------------------------------------------------------------
  # The tree's own make: hack/lib/init.sh forces GO111MODULE=off and builds in
  # a GOPATH under _output/ from vendor/, generating the OpenAPI and other
  # code kube-apiserver needs. The tarball is a `git archive` export, so
  # hack/lib/version.sh stamps v1.20.2 without a .git directory.
  # (hack/lib/golang.sh also puts GOCACHE under _output/, so it goes with the tree.)
  # GOPROXY=off: no module proxy is reachable here (and none is needed).
  # nice -n 19: yield the 2 cores to whoever else is compiling.
  local t0=$SECONDS
  (
    cd "$tree"
    unset GOFLAGS GOPATH GOROOT GOBIN GOCACHE GOTOOLCHAIN
    export GOPROXY=off
    nice -n 19 make WHAT="${K8S_CMDS[*]/#/cmd/}"
  )
  echo "make took $(( SECONDS - t0 ))s"
  local c
  for c in "${K8S_CMDS[@]}"; do
    install -m 0755 "$tree/_output/bin/$c" "$BIN/$c"
  done

  # --- etcd ----------------------------------------------------------------
  # Download and unpack etcd-server instead of installing it, so no etcd
  # system service is ever started or enabled.
  local edir="$ROOT/etcd-server"
  rm -rf "$edir"; mkdir -p "$edir"
  (cd "$edir" && apt-get -o APT::Sandbox::User=root download etcd-server)
  dpkg-deb -x "$edir"/etcd-server_*.deb "$edir/root"
  install -m 0755 "$edir/root/usr/bin/etcd" "$BIN/etcd"

  for c in "${ALL_BINS[@]}"; do version_of "$BIN/$c"; done
  {
    echo "script=$SCRIPT_VERSION"
    apt-get source --print-uris "$SRC_PKG" 2>/dev/null | sed -n "s/^Selected version '\([^']*\)'.*/kubernetes-src=\1/p"
    echo "go=$go_version ($debian_go)"
    echo "etcd-server=$(dpkg-deb -f "$edir"/etcd-server_*.deb Version)"
    echo "built=$(date -u +%FT%TZ)"
  } > "$MARKER"
  # The unpacked tree plus its Go cache is ~2.3 GB; the verified tarball in
  # download/ is enough to rebuild. (Kept on failure, for debugging.)
  rm -rf "$SRC/tree"
  echo "=== done"
}

say "building into $BIN (about 7-10 min on a cold cache, 2 cores); log: $LOG"
rm -f "$MARKER"
run_logged 60 build
warm || { say "binaries built but the check failed; see $LOG"; exit 1; }
say "done"
result
