#!/usr/bin/env bash
# Installs banger, bangerd and banger-agent (built by `make build`) into a
# root-owned prefix, so a sudoers rule may name the installed bangerd:
#
#   $DESTDIR$PREFIX/bin/banger          the CLI; it starts the bangerd beside it
#   $DESTDIR$PREFIX/bin/bangerd         the daemon and its `priv` helper
#   $DESTDIR$PREFIX/bin/banger-agent    baked into images; bangerd finds it beside itself
#
# Each file is mode 0755, owned by root:root, and replaced by a rename. The
# target directory and every directory above it (up to /, or up to
# DESTDIR when staging) must be owned by root and writable by neither
# group nor others, otherwise the script refuses: a binary under a
# directory someone else can write can be swapped, and sudo would run the
# swapped one as root. Missing directories are made 0755 root:root.
#
# Environment: PREFIX (default /usr/local), DESTDIR (default empty), BIN
# (where `make build` put the binaries, default bin). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BIN=${BIN:-bin}
progs=(banger bangerd banger-agent)

die() {
	echo "install: $*" >&2
	exit 1
}

case $PREFIX in
/*) ;;
*) die "PREFIX must be an absolute path, not '$PREFIX'" ;;
esac
if [ -n "$DESTDIR" ]; then
	case $DESTDIR in
	/*) ;;
	*) die "DESTDIR must be an absolute path, not '$DESTDIR'" ;;
	esac
fi
[ "$(id -u)" -eq 0 ] || die "must run as root to install root-owned binaries: run 'sudo make install' (after 'make build' as yourself)"
for p in "${progs[@]}"; do
	if [ ! -f "$BIN/$p" ] || [ ! -x "$BIN/$p" ]; then
		die "$BIN/$p is missing: run 'make build' first (as yourself, not as root)"
	fi
done

# root_only DIR: refuse DIR unless it is a directory (not a symbolic link)
# owned by root and writable by neither group nor others.
root_only() {
	local d=$1 uid mode
	[ -L "$d" ] && die "$d is a symbolic link: choose a PREFIX without one (its target, $(readlink -f "$d"))"
	[ -d "$d" ] || die "$d is not a directory"
	read -r uid mode < <(stat -c '%u %a' "$d")
	[ "$uid" -eq 0 ] || die "$d is owned by uid $uid, not root: a binary under it could be replaced without root; choose another PREFIX"
	if (((8#$mode & 8#022) != 0)); then
		die "$d is writable by group or others (mode $mode): a binary under it could be replaced without root; choose another PREFIX"
	fi
}

bindir=$DESTDIR${PREFIX%/}/bin
# Where checking stops: / for a real install; DESTDIR itself (made if
# missing) when staging, since what lies above a staging tree is not
# what the installed files will live under.
top=/
if [ -n "$DESTDIR" ]; then
	top=${DESTDIR%/}
	[ -n "$top" ] || top=/
fi

# The directories to make (0755 root:root), top-down.
missing=()
d=$bindir
while [ ! -e "$d" ] && [ ! -L "$d" ]; do
	missing=("$d" "${missing[@]}")
	d=$(dirname "$d")
done
# under reports whether $1 is $top or below it.
under() {
	[ "$top" = / ] || [ "$1" = "$top" ] || [ "${1#"$top"/}" != "$1" ]
}
# Check what exists (from the deepest existing directory up to $top)
# before making anything under it.
d=$(dirname "${missing[0]:-$bindir/x}")
while under "$d"; do
	root_only "$d"
	if [ "$d" = "$top" ] || [ "$d" = / ]; then
		break
	fi
	d=$(dirname "$d")
done
for d in "${missing[@]}"; do
	install -d -m 0755 -o 0 -g 0 "$d"
done
root_only "$bindir"

for p in "${progs[@]}"; do
	dst=$bindir/$p
	tmp=$bindir/.$p.new.$$
	install -m 0755 -o 0 -g 0 "$BIN/$p" "$tmp"
	mv -f "$tmp" "$dst"
	echo "installed $dst"
done

user=${SUDO_USER:-youruser}
cat <<MSG
To run banger as $user, allow bangerd's privileged helper and nothing else
(visudo -f /etc/sudoers.d/banger):

  $user ALL=(root) NOPASSWD: ${PREFIX%/}/bin/bangerd priv *

then run ${PREFIX%/}/bin/banger; \`banger doctor\` checks the rule.
MSG
