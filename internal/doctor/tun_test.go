package doctor

import (
	"errors"
	"testing"

	"banger/internal/hostcap"
)

func TestTunCheck(t *testing.T) {
	denied := func(string) error { return errors.New("permission denied") }
	ok := func(string) error { return nil }
	for _, tt := range []struct {
		name string
		euid int
		open func(string) error
		want string
	}{
		{"root", 0, denied, "ok"},
		{"user, 0666", 1000, ok, "ok"},
		{"user, 0600", 1000, denied, "fail"},
	} {
		got := tunCheck(hostcap.Probes{Geteuid: func() int { return tt.euid }, OpenReadWrite: tt.open})
		if string(got.Status) != tt.want {
			t.Errorf("%s: %s %q, want %s", tt.name, got.Status, got.Detail, tt.want)
		}
	}
}
