#!/usr/bin/env bash
# Runs banger's test suite: installs missing host packages, builds the
# binaries and runs every package's tests. Privileged and QEMU tests run
# when root (they are required, not skipped, when CI=true). Needs no
# terminal or stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
go mod download
make build
go test -count=1 -timeout 60m ./... </dev/null
