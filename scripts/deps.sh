#!/usr/bin/env bash
# Installs the Debian packages banger needs that are missing, and checks
# that a recent enough Go is on PATH. Safe to run repeatedly; needs no
# terminal (DEBIAN_FRONTEND=noninteractive), runs apt-get directly as root
# and through sudo otherwise.
set -euo pipefail

packages=(
	qemu-system-x86 mmdebstrap e2fsprogs nftables podman iproute2
	openssh-client busybox-static lz4 zstd xz-utils cpio sudo shellcheck tmux
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} > 0)); then
	echo "installing: ${missing[*]}"
	as_root=()
	if [[ $(id -u) -ne 0 ]]; then
		as_root=(sudo)
	fi
	export DEBIAN_FRONTEND=noninteractive
	"${as_root[@]}" apt-get update -q </dev/null
	"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

if ! command -v go >/dev/null; then
	echo "go is not on PATH: install Go $(sed -n 's/^go //p' go.mod) or newer from the Go website" >&2
	exit 1
fi
want=$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' go.mod)
have=$(go env GOVERSION | sed -n 's/^go\([0-9]*\.[0-9]*\).*/\1/p')
if [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) != "$want" ]]; then
	echo "go $have is too old: banger needs go $want or newer" >&2
	exit 1
fi
