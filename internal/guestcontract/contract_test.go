package guestcontract

import (
	"net/netip"
	"strings"
	"testing"
)

// TestKernelCmdline pins the command line guests boot with: it is read by
// the initramfs and the kernel, so a change here is a change of contract.
func TestKernelCmdline(t *testing.T) {
	const base = "console=ttyS0 reboot=k panic=-1 root=LABEL=banger-root ro rootwait banger.overlay=LABEL=banger-overlay banger.work=LABEL=banger-work"
	if got := KernelCmdline(false); got != base {
		t.Errorf("KernelCmdline(false) = %q, want %q", got, base)
	}
	if got, want := KernelCmdline(true), base+" init=/usr/local/bin/banger-agent"; got != want {
		t.Errorf("KernelCmdline(true) = %q, want %q", got, want)
	}
}

// TestAgentUnit checks the unit starts the installed agent.
func TestAgentUnit(t *testing.T) {
	if !strings.Contains(AgentUnit, "\nExecStart="+AgentPath+" serve\n") {
		t.Errorf("AgentUnit does not run %s serve:\n%s", AgentPath, AgentUnit)
	}
}

func TestGateway(t *testing.T) {
	for _, tc := range []struct{ subnet, gw string }{
		{"10.77.0.0/24", "10.77.0.1"},
		{"192.0.2.0/29", "192.0.2.1"},
		{"172.16.0.0/16", "172.16.0.1"},
	} {
		if got := Gateway(netip.MustParsePrefix(tc.subnet)).String(); got != tc.gw {
			t.Errorf("Gateway(%s) = %s, want %s", tc.subnet, got, tc.gw)
		}
	}
}

func TestCheckSubnet(t *testing.T) {
	for _, tc := range []struct {
		subnet string
		err    string
	}{
		{"10.77.0.0/24", ""},
		{"10.77.0.0/16", ""},
		{"10.77.0.8/29", ""},
		{"10.77.0.1/24", "host bits are set"},
		{"10.0.0.0/8", "length must be between /16 and /29"},
		{"10.0.0.0/30", "length must be between /16 and /29"},
		{"fd00::/64", "must be an IPv4 prefix"},
	} {
		err := CheckSubnet(netip.MustParsePrefix(tc.subnet))
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("CheckSubnet(%s) = %v, want error containing %q", tc.subnet, err, tc.err)
		}
	}
	if err := CheckSubnet(netip.Prefix{}); err == nil {
		t.Errorf("CheckSubnet(zero) = nil, want error")
	}
}
