#!/usr/bin/env bash
# Runs banger's test suite: installs missing host packages, builds the
# binaries, lints (gofmt, go vet, staticcheck) and runs every package's
# tests. Privileged and QEMU tests run
# when root (they are required, not skipped, when CI=true). Needs no
# terminal or stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
go mod download
make build
make lint
# -p 1: packages one at a time, so guests booting under software emulation
# (TCG) never compete with each other for the CPU.
go test -p 1 -count=1 -timeout 80m ./... </dev/null
