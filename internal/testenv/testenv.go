// Package testenv holds the helpers banger's privileged tests share: the
// CI-aware prerequisite checks (a test that needs root, a binary or a
// network namespace runs in CI and fails loudly there when the
// prerequisite is missing, and may only skip elsewhere) and throwaway
// network namespaces in which every bridge, tap, NAT rule and guest of a
// test lives.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (the CI environment variable is
// "true"). In CI a missing prerequisite is a failure, never a skip.
func InCI() bool {
	return os.Getenv("CI") == "true"
}

// RequireRoot stops the test unless it runs as root: t.Fatal in CI,
// t.Skip elsewhere.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	missing(t, "needs root: run the tests as root (CI=true makes this a failure)")
}

// RequireCommand stops the test unless every named binary is on PATH:
// t.Fatal in CI, t.Skip elsewhere.
func RequireCommand(t testing.TB, names ...string) {
	t.Helper()
	var absent []string
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			absent = append(absent, name)
		}
	}
	if len(absent) > 0 {
		missing(t, "needs "+strings.Join(absent, ", ")+" on PATH")
	}
}

// missing reports an absent prerequisite the CI-aware way.
func missing(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatal(reason)
	}
	t.Skip(reason)
}
