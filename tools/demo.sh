#!/usr/bin/env bash
# The README's first command, run by `make demo` from the repository root
# after bin/racker and bin/testregistry are built: start a registry on
# 127.0.0.1 seeded with a Debian image built from Debian's mirror (Docker Hub
# is not needed), pull it through RACKER_REGISTRY_MIRRORS, list it, look
# inside, pull again. The registry is stopped on every exit, failures and
# Ctrl-C included.
#
# RACKER_ROOT is the demo's own image store (the Makefile passes
# /var/tmp/racker-demo). It is emptied first, so the first pull is a real one
# on every run, and left in place afterwards to look around in.
set -euo pipefail

: "${RACKER_ROOT:?set RACKER_ROOT to an image store for the demo}"
export RACKER_ROOT

tmp=$(mktemp -d /tmp/racker-demo.XXXXXX)
registry=
cleanup() {
	if [ -n "$registry" ]; then
		kill -TERM "$registry" 2>/dev/null || true
		wait "$registry" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# show prints a command line, then runs it.
show() {
	printf '\n$ %s\n' "$1"
	eval "$1"
}

echo "Starting a registry on 127.0.0.1 with debian:bookworm-slim."
echo "(A first run builds that image from Debian's mirror with mmdebstrap: about 30-40 s."
echo " Later runs take it from /var/cache/racker-test.)"
bin/testregistry -seed debian:bookworm-slim -addr-file "$tmp/addr" >/dev/null 2>"$tmp/registry.log" &
registry=$!
until [ -s "$tmp/addr" ]; do
	if ! kill -0 "$registry" 2>/dev/null; then
		wait "$registry" || true
		registry=
		echo "demo: the test registry failed:" >&2
		cat "$tmp/registry.log" >&2
		exit 1
	fi
	sleep 0.2
done
addr=$(cat "$tmp/addr")
echo "Registry: $addr. Image store: RACKER_ROOT=$RACKER_ROOT (emptied first; /var/lib/postroj is not touched)."
rm -rf "$RACKER_ROOT"

show "RACKER_REGISTRY_MIRRORS=docker.io=$addr bin/racker pull debian:bookworm-slim"
show "bin/racker images"

# jq may not be installed: the JSON is indented, one field per line.
read -r cmd <<'END'
rootfs=$(bin/racker images --format json | sed -n 's/^ *"rootfs": "\(.*\)",*$/\1/p')
END
show "$cmd"
if [ -z "$rootfs" ] || [ ! -f "$rootfs/etc/os-release" ]; then
	echo "demo: racker images names no root filesystem with etc/os-release (got '$rootfs')" >&2
	exit 1
fi
echo "rootfs=$rootfs"
show 'grep PRETTY_NAME "$rootfs/etc/os-release"'
show 'cat "$rootfs/etc/debian_version"'
show 'du -sh "$rootfs"'

show "RACKER_REGISTRY_MIRRORS=docker.io=$addr bin/racker pull debian:bookworm-slim" | tee "$tmp/again"
if ! grep -q '^Up to date: ' "$tmp/again"; then
	echo "demo: the second pull did not find the image up to date" >&2
	exit 1
fi
