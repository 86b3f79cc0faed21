#!/usr/bin/env bash
# Print the path of a working helm binary, building it on first use.
#
# Helm is not packaged for Debian here, so it is built from the Go module proxy into
# tools/helm/bin (gitignored): only a machine's first run pays the ~4 minutes.
# Usage: tools/helm.sh            -> prints the helm path (builds when absent)
#        tools/helm.sh <args...>  -> runs helm with <args>
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.16.4}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/tools/helm/bin"
HELM="$BIN_DIR/helm"

if [[ -x "$(command -v helm || true)" && -z "${VOC_HELM_BUILD:-}" ]]; then
  HELM="$(command -v helm)"
elif [[ ! -x "$HELM" ]]; then
  command -v go >/dev/null || { echo "helm.sh: neither helm nor go is available" >&2; exit 3; }
  mkdir -p "$BIN_DIR"
  # A private module cache and build cache inside tools/helm keep the build self-contained.
  export GOPATH="${GOPATH:-$ROOT/tools/helm/gopath}"
  export GOCACHE="${GOCACHE:-$ROOT/tools/helm/gocache}"
  # Writable module directories: Go makes them read-only by default, and then an ordinary
  # user's `rm -rf` of the checkout fails on tools/helm/gopath.
  export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"
  echo "helm.sh: building helm $HELM_VERSION into $BIN_DIR (first run only, a few minutes)" >&2
  GOBIN="$BIN_DIR" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi

if [[ $# -eq 0 ]]; then
  echo "$HELM"
else
  exec "$HELM" "$@"
fi
