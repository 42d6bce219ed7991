#!/usr/bin/env bash
# build.sh builds the local control-plane binaries (etcd, kube-apiserver) from the Go module proxy
# into a cache outside the checkout, keyed by version, and prints nothing when they are already there.
# Usage: infra/local/tools/build.sh [BIN_DIR]   (default: ${REKEY_CACHE:-$HOME/.cache/rekey}/bin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-${REKEY_CACHE:-$HOME/.cache/rekey}/bin}
mkdir -p "$bin"

build() { # name version
	local name=$1 version=$2 out="$bin/$1-$2"
	if [ -x "$out" ]; then return 0; fi
	echo "building $name $version into $out (first time only; kube-apiserver takes ~11 min cold)" >&2
	# Each tool is its own module with a committed go.sum, kept out of the product's go.mod.
	(cd "$here/$name" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" .)
	mv "$out.tmp" "$out"
}

build etcd v3.7.3
build kube-apiserver v1.37.2
