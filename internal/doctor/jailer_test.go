package doctor

import (
	"io/fs"
	"strings"
	"testing"

	"banger/internal/config"
	"banger/internal/hostcap"
)

func TestJailerCheck(t *testing.T) {
	probes := func(euid int, jailer bool) hostcap.Probes {
		return hostcap.Probes{
			Geteuid: func() int { return euid },
			LookPath: func(f string) (string, error) {
				if jailer && (f == "jailer" || f == "/opt/jailer") {
					return "/usr/local/bin/jailer", nil
				}
				return "", fs.ErrNotExist
			},
		}
	}
	cfg := func(bin string) *config.Config { c := config.Default(); c.JailerBin = bin; return c }
	tests := []struct {
		name   string
		p      hostcap.Probes
		c      *config.Config
		fcOK   bool
		status string
		detail string
	}{
		{"no firecracker", probes(0, true), cfg(""), false, "ok", "not needed"},
		{"not root", probes(1000, true), cfg(""), true, "ok", "runs as you"},
		{"root with jailer", probes(0, true), cfg(""), true, "ok", "jailed as 65534:65534"},
		{"root without jailer", probes(0, false), cfg(""), true, "warn", "seccomp only"},
		{"turned off", probes(0, true), cfg("none"), true, "warn", "turned off"},
		{"configured but missing", probes(0, false), cfg("/opt/jailer"), true, "fail", "will not start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := jailerCheck(tt.p, tt.c, tt.fcOK)
			if string(got.Status) != tt.status || !strings.Contains(got.Detail, tt.detail) {
				t.Errorf("got %s %q, want %s containing %q", got.Status, got.Detail, tt.status, tt.detail)
			}
		})
	}
}
