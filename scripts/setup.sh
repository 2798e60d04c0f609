#!/usr/bin/env bash
# Sets up banger on this machine: installs missing host packages,
# downloads the Go modules, builds bin/banger, bin/bangerd and
# bin/banger-agent (as a user other than root, also installs them
# root-owned with `sudo make install`), then boots a first VM and runs
# `uname -a` in it.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
go mod download
make build

banger=bin/banger
if [ "$(id -u)" -ne 0 ]; then
	# As a user, bangerd reaches root through a sudoers rule, which must
	# name a root-owned copy (README, Privileges).
	sudo make install
	banger=/usr/local/bin/banger
fi
echo "$banger vm run -- uname -a"
exec "$banger" vm run -- uname -a
