#!/usr/bin/env bash
# withproxy.sh CMD [ARGS...] — run CMD with the go command reading this
# repository's releases from a local module proxy instead of the network.
#
# The contrib, examples and benchmarks modules require a released version of
# the core (and examples of contrib modules), with no replace: go.work joins
# them for development, but `go mod tidy` works on one module and resolves
# github.com/vineroute/vinequeue@vX.Y.Z like a user's build does. This script
# builds a GOPROXY=file:// directory from the repository itself (every
# release in ./releases, from its commit: tags need not be in the clone;
# scripts/modproxy) and puts it first in GOPROXY, so that resolution needs no
# network, and exempts the project's modules from the checksum database
# (GONOSUMDB), which has never seen these zips: go.sum still gets their
# hashes, computed from the zips.
#
# Environment: MODPROXY_DIR (default: .modproxy at the repository root),
# MODPROXY_ADD (VERSION=REV: also publish the root module at REV, for
# scripts/release.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
dir=${MODPROXY_DIR:-$ROOT/.modproxy}
args=(-repo "$ROOT" -out "$dir")
[ -n "${MODPROXY_ADD:-}" ] && args+=(-add "$MODPROXY_ADD")
# Only our own modules live there: clear them, so a dropped release goes too.
rm -rf "$dir/github.com/vineroute"
# The tool module is outside go.work: its golang.org/x/mod must not enter
# the workspace's build list.
(cd "$ROOT/scripts/modproxy" && GOWORK=off "$GO" run . "${args[@]}" >/dev/null)
upstream=$("$GO" env GOPROXY)
export GOPROXY="file://$dir${upstream:+,$upstream}"
export GONOSUMDB="github.com/vineroute/vinequeue${GONOSUMDB:+,$GONOSUMDB}"
exec "$@"
