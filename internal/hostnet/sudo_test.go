package hostnet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/cmdrun"
)

// fakeSudo writes a sudo stand-in that records its argv, one argument per
// NUL-terminated record, to a file, and exits with code (printing a
// message first when it fails).
func fakeSudo(t *testing.T, code int) (sudo, record string) {
	t.Helper()
	dir := t.TempDir()
	record = filepath.Join(dir, "argv")
	sudo = filepath.Join(dir, "sudo")
	script := "#!/bin/sh\n" +
		"for a in \"$@\"; do printf '%s\\0' \"$a\"; done >> '" + record + "'\n" +
		"printf '\\n' >> '" + record + "'\n"
	if code != 0 {
		script += "echo 'sudo: a password is required' >&2\nexit " + strconv.Itoa(code) + "\n"
	}
	if err := os.WriteFile(sudo, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return sudo, record
}

// readArgv returns the argv lists a fake sudo recorded.
func readArgv(t *testing.T, record string) [][]string {
	t.Helper()
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		out = append(out, strings.Split(strings.TrimSuffix(line, "\x00"), "\x00"))
	}
	return out
}

func TestSudo_Argv(t *testing.T) {
	sudo, record := fakeSudo(t, 0)
	s := Sudo{Bangerd: "/opt/banger bin/bangerd", SudoPath: sudo}
	ctx := context.Background()
	subnet := netip.MustParsePrefix("192.0.2.0/24")
	steps := []struct {
		do   func() error
		want []string
	}{
		{func() error { return s.EnsureBridge(ctx, "banger0", subnet, "banger:0123abcd") }, []string{"ensure-bridge", "banger0", "192.0.2.0/24", "banger:0123abcd"}},
		{func() error { return s.EnsureTap(ctx, "bgtap0", "banger0", 1000, 1001, false) }, []string{"ensure-tap", "bgtap0", "banger0", "1000", "1001", "isolated"}},
		{func() error { return s.EnsureTap(ctx, "bgtap1", "banger0", 1000, 1001, true) }, []string{"ensure-tap", "bgtap1", "banger0", "1000", "1001", "shared"}},
		{func() error { return s.DeleteLink(ctx, "bgtap0") }, []string{"delete-link", "bgtap0"}},
		{func() error { return s.ApplyFirewall(ctx, Firewall{Bridge: "banger0", Subnet: subnet}) }, []string{"apply-firewall", "banger0", "192.0.2.0/24", "-", "-", "0", "-", "0"}},
		{func() error {
			return s.ApplyFirewall(ctx, Firewall{Bridge: "banger0", Subnet: subnet, Guests: []Guest{{"bgtap1", netip.MustParseAddr("192.0.2.5")}}})
		}, []string{"apply-firewall", "banger0", "192.0.2.0/24", "-", "bgtap1=192.0.2.5", "0", "-", "0"}},
		{func() error {
			return s.ApplyFirewall(ctx, Firewall{Bridge: "bg0123abcd", Subnet: subnet, ProxyPort: 3129, DNSPort: 40000})
		}, []string{"apply-firewall", "bg0123abcd", "192.0.2.0/24", "-", "-", "3129", "-", "40000"}},
		{func() error { return s.RemoveFirewall(ctx, "banger0") }, []string{"remove-firewall", "banger0"}},
		{func() error { return s.EnableForwarding(ctx) }, []string{"enable-forwarding"}},
		// Hostile input is passed as one inert argument, never through a
		// shell, and PrivMain rejects it on the other side.
		{func() error { return s.DeleteLink(ctx, "x; rm -rf / $(id)") }, []string{"delete-link", "x; rm -rf / $(id)"}},
	}
	var want [][]string
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatal(err)
		}
		want = append(want, append([]string{"-n", "/opt/banger bin/bangerd", "priv"}, st.want...))
	}
	if diff := cmp.Diff(want, readArgv(t, record)); diff != "" {
		t.Errorf("sudo argv (-want +got):\n%s", diff)
	}
}

func TestSudo_Failure(t *testing.T) {
	sudo, _ := fakeSudo(t, 1)
	s := Sudo{Bangerd: "/usr/local/bin/bangerd", SudoPath: sudo}
	err := s.DeleteLink(context.Background(), "bgtap4")
	var ce *cmdrun.Error
	if !errors.As(err, &ce) {
		t.Fatalf("DeleteLink error = %v, want a *cmdrun.Error", err)
	}
	if diff := cmp.Diff([]string{sudo, "-n", "/usr/local/bin/bangerd", "priv", "delete-link", "bgtap4"}, ce.Argv); diff != "" {
		t.Errorf("error argv (-want +got):\n%s", diff)
	}
	for _, want := range []string{"delete link bgtap4", "priv delete-link bgtap4", "exit status 1", "a password is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestSudo_DefaultBinary(t *testing.T) {
	got := Sudo{Bangerd: "/usr/local/bin/bangerd"}.Argv(OpRemoveFirewall, "banger0")
	want := []string{"sudo", "-n", "/usr/local/bin/bangerd", "priv", "remove-firewall", "banger0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Argv (-want +got):\n%s", diff)
	}
}
