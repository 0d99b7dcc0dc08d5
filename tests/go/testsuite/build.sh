#!/bin/bash
# Build daxfs-snaptest (this directory) offline in GOPATH mode against
# Debian's Go packages, once per content: the binary is cached under
# ${DAXFS_GO_CACHE:-/var/tmp/daxfs-go} by a hash of the sources it is
# made of.  Prints the binary's path; exits 77 if Go or containerd's
# sources are not installed.
set -eu
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
gocode=/usr/share/gocode
ctrd=$gocode/src/github.com/containerd/containerd
cache=${DAXFS_GO_CACHE:-/var/tmp/daxfs-go}

if ! command -v go >/dev/null || [ ! -d "$ctrd/snapshots/testsuite" ]; then
	echo "build.sh: golang-go or golang-github-containerd-containerd-dev missing" >&2
	exit 77
fi
key=$({ cat "$src"/*.go; go version; dpkg-query -W golang-github-containerd-containerd-dev \
	2>/dev/null; cat "$ctrd"/snapshots/testsuite/*.go; } | sha256sum | cut -c1-16)
bin=$cache/daxfs-snaptest-$key
if [ ! -x "$bin" ]; then
	mkdir -p "$cache/gopath"
	(cd "$src" && GO111MODULE=off GOPATH="$cache/gopath:$gocode" GOPROXY=off GOFLAGS= \
		GOCACHE="$cache/gocache" go build -o "$bin.tmp$$" .) >&2
	mv "$bin.tmp$$" "$bin"
fi
echo "$bin"
