package debian

import (
	"io/fs"
	"strings"
	"testing"

	"banger/internal/hostcap"
)

// A normal user without subordinate ids gets the exact fix before
// mmdebstrap starts (it failed midway, unable to pick a mode, before).
func TestCanBootstrap(t *testing.T) {
	probes := func(euid int, subuid string) hostcap.Probes {
		return hostcap.Probes{
			Geteuid:  func() int { return euid },
			Username: func() (string, error) { return "dev", nil },
			ReadFile: func(p string) ([]byte, error) {
				if subuid != "" && (p == "/etc/subuid" || p == "/etc/subgid") {
					return []byte(subuid), nil
				}
				return nil, fs.ErrNotExist
			},
		}
	}
	if err := canBootstrap(probes(0, "")); err != nil {
		t.Errorf("root: %v", err)
	}
	if err := canBootstrap(probes(1000, "dev:100000:65536\n")); err != nil {
		t.Errorf("user with ids: %v", err)
	}
	err := canBootstrap(probes(1000, ""))
	if err == nil || !strings.Contains(err.Error(), "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 dev") {
		t.Errorf("user without ids: %v", err)
	}
}
