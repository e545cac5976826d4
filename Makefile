# Targets for developers and CI. `make test` is what .ci/run runs.

GO ?= go
# Debian packages the tests (and racker at run time) need. Keep in sync with
# .ci/run, which installs them before make itself is there.
DEPS := autopkgtest ca-certificates docker-registry gpg iproute2 make mmdebstrap mount pigz rpm systemd-container tar util-linux
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test deps demo bench soak

all: build

# Static binaries: they start a little faster and run on any distribution.
# Every racker command pays for the binary's start (racker run --boot=never
# is measured against bare systemd-nspawn): urfave_cli_no_docs leaves out
# urfave/cli's man and markdown writers, whose markdown package costs 0.5 ms
# of init per start; -s -w leave out the symbol table and DWARF, which a
# panic's stack trace does not need (it comes from the pclntab, which stays).
BUILDFLAGS := -trimpath -tags urfave_cli_no_docs -ldflags='-s -w'

build:
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -o bin/racker ./cmd/racker
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -o bin/postroj ./cmd/postroj
	ln -sf postroj bin/autopkgtest-virt-racker

# Installs only what is missing, so it is cheap and offline when all is there.
deps:
	@missing=$$(for p in $(DEPS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -qx 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

# gofmt (hidden directories such as scratch space excepted), go vet, then
# every test; the end-to-end scripts in testdata/script build a Debian image
# on first use (cached in /var/cache/racker-test), and run on this machine
# and inside the test hosts (Debian trixie and sid booted with systemd as
# PID 1, see internal/scripttest's TestHosts). Last, how many scripts
# passed on each host.
TEST_SUMMARY := bin/test-summary.txt

test: deps
	@unformatted=$$(gofmt -l $$(find . -path './.*' -prune -o -name '*.go' -print)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@mkdir -p bin && rm -f $(TEST_SUMMARY)
	@status=0; RACKER_TEST_SUMMARY='$(CURDIR)/$(TEST_SUMMARY)' $(GO) test -count=1 -timeout 80m ./... || status=$$?; \
	echo "end-to-end scripts per host:"; \
	if [ -s $(TEST_SUMMARY) ]; then sed 's/^/  /' $(TEST_SUMMARY); else echo "  none ran"; fi; \
	exit $$status

# The README's first command: a loopback registry seeded with a Debian image
# built from Debian's mirror, pulled through RACKER_REGISTRY_MIRRORS, then
# booted with racker run (the first run prepares the image with apt-get from
# Debian's mirror); see tools/demo.sh. Its image store is DEMO_ROOT, emptied
# on every run, so the real one (/var/lib/postroj) is never touched.
DEMO_ROOT ?= /var/tmp/racker-demo

demo: deps build
	@$(GO) build -o bin/testregistry ./tools/testregistry
	@RACKER_ROOT='$(DEMO_ROOT)' bash tools/demo.sh

# Side by side in one run (see tools/bench), three groups of cases:
#   pull: racker pull against the original tool's pipeline (skopeo copy +
#         umoci unpack) and the gzip|tar floor, on one loopback registry;
#   run:  racker run --rm IMAGE true against bare systemd-nspawn doing the
#         same (boot until READY=1, nsenter true, poweroff), with and without
#         masked units, and racker run --boot=never against nspawn ... true;
#         racker run (private user namespace, the default) against
#         racker run --userns=host;
#   probe: postroj pkgprobe --image=debian-bookworm --check-unit=systemd-journald,
#         warm, against the masked nspawn boot floor on the tree it boots, and
#         against the same probe with --userns=host; and cold, from an empty
#         store and package cache (pull, prepare with apt-get from Debian's
#         mirror, boot, probe).
# BENCH_CASES=pull (or run, probe, net, or a list) picks some. The reference tools
# are installed here only: racker needs neither.
BENCH_DEPS := skopeo umoci
BENCH_N ?= 5
BENCH_CASES ?= pull,run,probe,net
BENCH_JSON ?= bin/bench.json

bench: deps build
	@$(MAKE) --no-print-directory deps DEPS='$(BENCH_DEPS)'
	$(GO) run ./tools/bench -racker bin/racker -postroj bin/postroj -n $(BENCH_N) -cases '$(BENCH_CASES)' -json $(BENCH_JSON)

# The soak (testdata/soak): 100 racker run --rm and 20 postroj pkgprobe in a
# row leave the store's state directory, mounts and processes as before; the
# time per run at the start and at the end is printed.
soak: deps
	RACKER_E2E=1 RACKER_SOAK=1 $(GO) test -count=1 -timeout 60m -v -run 'TestSoak' ./internal/scripttest
