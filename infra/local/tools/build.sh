#!/usr/bin/env bash
# build.sh builds the local control-plane binaries (etcd, kube-apiserver) from the Go module proxy
# into a cache outside the checkout, keyed by version, and prints nothing when they are already there.
# Usage: infra/local/tools/build.sh [BIN_DIR]   (default: ${REKEY_CACHE:-$HOME/.cache/rekey}/bin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-${REKEY_CACHE:-$HOME/.cache/rekey}/bin}
mkdir -p "$bin"

build() { # name version [recipe-revision] [ldflags]
	local name=$1 version=$2 ldflags=${4:-} out="$bin/$1-$2${3:+-$3}"
	if [ -x "$out" ]; then return 0; fi
	echo "building $name $version into $out (first time only; kube-apiserver takes ~11 min cold)" >&2
	# Each tool is its own module with a committed go.sum, kept out of the product's go.mod.
	(cd "$here/$name" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" .)
	mv "$out.tmp" "$out"
}

build etcd v3.7.3
# rekey2: version stamped (so /version says v1.37.2) and the encryption reload interval knob.
# rekey3: and the REKEY_APISERVER_HOSTNAME identity knob (distinct APIServerIDs on one host).
v=k8s.io/component-base/version
build kube-apiserver v1.37.2 rekey3 "-X $v.gitVersion=v1.37.2 -X $v.gitMajor=1 -X $v.gitMinor=37 -X $v.gitTreeState=clean"
