#!/usr/bin/env bash
# The README's first command, run by `make demo` from the repository root
# after bin/racker and bin/testregistry are built: start a registry on
# 127.0.0.1 seeded with a Debian image built from Debian's mirror (Docker Hub
# is not needed), pull it through RACKER_REGISTRY_MIRRORS, list it, look
# inside, pull again, then boot it as a container: the first `racker run`
# prepares the image (apt-get installs systemd, D-Bus and curl from Debian's
# mirror), later ones reuse that. Last, postroj lists its catalogue and
# probes Debian's webfs package on debian-bookworm. The registry is stopped on every exit,
# failures and Ctrl-C included. Every command is printed before it runs; the
# first that fails ends the demo with its status and a line saying so.
#
# RACKER_ROOT is the demo's own image store (the Makefile passes
# /var/tmp/racker-demo). It is emptied first, so the first pull and the
# preparation are real ones on every run, and left in place afterwards to
# look around in.
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

# show prints a command line, then runs it; if it fails, the demo ends
# with its exit status.
show() {
	printf '\n$ %s\n' "$1"
	local status=0
	eval "$1" || status=$?
	if [ "$status" -ne 0 ]; then
		printf 'demo: FAILED with exit status %d: %s\n' "$status" "$1" >&2
		exit "$status"
	fi
}

# fail ends the demo with a message.
fail() {
	printf 'demo: FAILED: %s\n' "$*" >&2
	exit 1
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
	fail "racker images names no root filesystem with etc/os-release (got '$rootfs')"
fi
echo "rootfs=$rootfs"
show 'grep PRETTY_NAME "$rootfs/etc/os-release"'
show 'cat "$rootfs/etc/debian_version"'
show 'du -sh "$rootfs"'

show "RACKER_REGISTRY_MIRRORS=docker.io=$addr bin/racker pull debian:bookworm-slim" | tee "$tmp/again"
if ! grep -q '^Up to date: ' "$tmp/again"; then
	fail "the second pull did not find the image up to date"
fi

echo
echo "Now a real container. The image has no systemd, so the first racker run prepares it:"
echo "apt-get installs systemd, dbus and curl from Debian's mirror (about 10-20 s), once;"
echo "the result is kept in the store. Then it boots the image and runs the command inside."
show "bin/racker run --rm debian:bookworm-slim cat /etc/os-release" | tee "$tmp/os-release"
grep -q '^VERSION_CODENAME=bookworm$' "$tmp/os-release" || fail "/etc/os-release in the container does not say bookworm"

echo
echo "Booted with systemd: hostnamectl asks systemd-hostnamed over the container's D-Bus."
show "bin/racker run --rm debian:bookworm-slim hostnamectl" | tee "$tmp/hostnamectl"
grep -q 'Virtualization: systemd-nspawn' "$tmp/hostnamectl" || fail "hostnamectl does not report systemd-nspawn"

echo
echo "Standard input goes through with -i:"
show 'echo "hello world" | bin/racker run -i --rm debian:bookworm-slim cat' | tee "$tmp/hello"
grep -qx 'hello world' "$tmp/hello" || fail "cat in the container did not echo standard input"

echo
echo "postroj: the curated catalogue, and a package probe as a release engineer runs it."
show "bin/postroj list-images | grep -E '^(NAME|debian-[a-z]+|centos-8|fedora-37) '"
echo
echo "Install Debian's webfs package from the pool on a booted debian-bookworm (the image above),"
echo "wait for its unit, and check that it answers on port 8000 (webfs answers / with 404: a pass)."
webfs=http://deb.debian.org/debian/pool/main/w/webfs/webfs_1.21+ds1-12+b1_amd64.deb
show "RACKER_REGISTRY_MIRRORS=docker.io=$addr bin/postroj pkgprobe --image=debian-bookworm --package=$webfs --check-unit=webfs --check-network=http://localhost:8000" | tee "$tmp/probe"
grep -q 'PASSED' "$tmp/probe" || fail "the webfs probe did not pass"

echo
echo "Done. The store is left in $RACKER_ROOT."
