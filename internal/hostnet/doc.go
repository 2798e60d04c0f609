// Package hostnet owns banger's host networking: one bridge with the host
// as the guests' gateway, each VM's tap attached to it, NAT, guest
// isolation and the redirect of guests' DNS in the daemon's own nftables
// tables, and their teardown.
//
// Every host resource is the daemon instance's own, so two daemons (two
// state dirs) coexist on one host: the tables are named after the bridge
// (TableName), the bridge carries the instance's mark as its alias
// (Config.Mark), taps are named after VMs and torn down only from this
// bridge, and Conflicts refuses a subnet routed elsewhere or a bridge of
// another instance.
//
// The package is split the house way: pure planning functions (names,
// MACs, the nftables ruleset; plan.go) and a thin executor behind the
// Privileged interface. Direct performs the operations itself and needs
// root (CAP_NET_ADMIN); Sudo runs them through `sudo -n bangerd priv OP
// ARGS...`, whose receiving side, PrivMain, validates every argument
// before calling Direct. Manager sequences the operations: measure the
// host, act only where it differs.
//
// # nftables through nft -f
//
// Direct applies the ruleset by piping the script from Ruleset to `nft -f
// -` rather than building netlink expressions with google/nftables. The
// script is the plan: it is what the golden test pins, what a reviewer
// reads, and what `nft list table inet banger` (or banger_<bridge>) shows
// back; nft applies it as one transaction, so replacing the table is
// atomic and idempotent.
// The cost is a runtime dependency on the nft binary (nftables package),
// which the doctor checks.
//
// # Host-wide effects
//
// Ensure sets net.ipv4.ip_forward=1 in the daemon's network namespace
// (host-wide when bangerd runs in the host's namespace) and leaves it set
// on Teardown, since other software may rely on it. A firewall that drops
// forwarded traffic in another table (docker sets the iptables FORWARD
// policy to DROP) also drops guest traffic: banger's accepts cannot
// override another table's drop.
package hostnet
