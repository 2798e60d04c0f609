#!/usr/bin/env bash
# Runs banger's test suite: installs missing host packages, builds the
# binaries, lints (go mod tidy, gofmt, go vet, staticcheck) and runs every
# package's tests. Privileged and QEMU tests run when root (they are
# required, not skipped, when CI=true). Needs no terminal or stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
go mod download
make build
make lint

# Packages that boot guests run without the race detector (it would slow
# software emulation down for nothing: the guest is not Go); every other
# package runs under it. -p 1: one package at a time, so guests booting
# under TCG never compete with each other for the CPU.
guests='^banger/internal/(e2e|image/debian|image/dockerfile)$'
mapfile -t others < <(go list ./... | grep -Ev "$guests")
mapfile -t booting < <(go list ./... | grep -E "$guests")
go test -race -p 1 -count=1 -timeout 40m "${others[@]}" </dev/null
go test -p 1 -count=1 -timeout 60m "${booting[@]}" </dev/null
