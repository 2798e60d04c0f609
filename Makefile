# banger build, test and lint entry points.
#
#   make build   bin/banger, bin/bangerd, bin/banger-agent (static, CGO_ENABLED=0)
#   make test    the README's test command (./scripts/test.sh)
#   make lint    go mod tidy -diff, gofmt, go vet and staticcheck (pinned as a go.mod tool)
#   make install the built binaries into $(DESTDIR)$(PREFIX)/bin, root-owned
#                (./scripts/install.sh; run `make build` first, then `sudo make install`)
#
# VERSION and BUILD_STAMP are linked into every binary (package
# internal/buildinfo). The CLI replaces a running bangerd whose stamp is
# older than its own, so one `make build` gives all three the same stamp.

GO          ?= go
BIN         ?= bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
BUILD_STAMP ?= $(shell date +%s)
LDFLAGS     := -s -w \
	-X banger/internal/buildinfo.version=$(VERSION) \
	-X banger/internal/buildinfo.stamp=$(BUILD_STAMP)
CMDS        := ./cmd/banger ./cmd/bangerd ./cmd/banger-agent
PREFIX      ?= /usr/local
DESTDIR     ?=

.PHONY: build test lint install clean

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(CMDS)

test:
	./scripts/test.sh

lint:
	$(GO) mod tidy -diff
	@out="$$(gofmt -l cmd internal)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Not dependent on build: under sudo it would build as root, leaving
# root-owned files in the clone and root's module cache.
install:
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' BIN='$(BIN)' ./scripts/install.sh

clean:
	rm -rf $(BIN)
