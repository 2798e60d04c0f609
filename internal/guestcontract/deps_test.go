package guestcontract_test

import (
	"os/exec"
	"strings"
	"testing"
)

// goList runs `go list` with args and returns its output fields.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.Fields(string(out))
}

func under(dep, pkg string) bool { return dep == pkg || strings.HasPrefix(dep, pkg+"/") }

// TestContractPackagesAreStandardLibraryOnly keeps the packages every side
// shares (the guest contract, the host layout, the agent wire types) free
// of dependencies, so the guest agent, the CLI and the daemon can all link
// them without linking each other.
func TestContractPackagesAreStandardLibraryOnly(t *testing.T) {
	for _, pkg := range []string{"banger/internal/guestcontract", "banger/internal/layout", "banger/internal/agent"} {
		for _, dep := range goList(t, "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg) {
			if dep != pkg && dep != "banger/internal/guestcontract" && dep != "banger/internal/layout" {
				t.Errorf("%s imports %s; it must use only the standard library", pkg, dep)
			}
		}
	}
}

// TestDaemonDoesNotLinkGuestServer keeps the guest half of the agent (its
// HTTP server, PTYs, process handling) out of bangerd: the daemon only
// needs the wire types and the client.
func TestDaemonDoesNotLinkGuestServer(t *testing.T) {
	for _, dep := range goList(t, "-deps", "banger/cmd/bangerd") {
		for _, f := range []string{"github.com/creack/pty", "banger/internal/agent/agentserver", "banger/internal/agent/guest"} {
			if under(dep, f) {
				t.Errorf("cmd/bangerd links %s", dep)
			}
		}
	}
}

// TestImageDoesNotImportAgent keeps the image builders on the guest
// contract: what they install (binary path, unit) comes from
// guestcontract, not from the agent's code.
func TestImageDoesNotImportAgent(t *testing.T) {
	for _, dep := range goList(t, "-deps", "banger/internal/image/...") {
		if under(dep, "banger/internal/agent") {
			t.Errorf("internal/image/... imports %s", dep)
		}
	}
}
