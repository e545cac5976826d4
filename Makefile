# Targets for developers and CI. `make test` is what .ci/run runs.

GO ?= go
# Debian packages the tests (and racker at run time) need. Keep in sync with
# .ci/run, which installs them before make itself is there.
DEPS := ca-certificates docker-registry gpg make mmdebstrap mount pigz systemd-container tar
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test deps demo bench

all: build

build:
	$(GO) build -o bin/racker ./cmd/racker
	$(GO) build -o bin/postroj ./cmd/postroj

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
# on first use (cached in /var/cache/racker-test).
test: deps
	@unformatted=$$(gofmt -l $$(find . -path './.*' -prune -o -name '*.go' -print)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 60m ./...

demo: deps build
	@echo "demo: not written yet"

bench: deps build
	@echo "bench: not written yet"
