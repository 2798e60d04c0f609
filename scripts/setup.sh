#!/usr/bin/env bash
# Sets up banger on this machine: installs missing host packages,
# downloads the Go modules, builds bin/banger, bin/bangerd and
# bin/banger-agent, then boots a first VM and runs `uname -a` in it.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
go mod download
make build

echo "bin/banger vm run -- uname -a"
exec bin/banger vm run -- uname -a
