package agentserver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/agent"
)

func TestReadStats(t *testing.T) {
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	files := map[string]string{
		"stat":    "cpu  100 5 50 1000 20 1 2 3 40 0\ncpu0 50 2 25 500 10 0 1 1 20 0\nintr 1\n",
		"meminfo": "MemTotal:        1012345 kB\nMemFree:          500000 kB\nMemAvailable:     800000 kB\n",
		"loadavg": "0.52 0.31 0.10 1/123 456\n",
		"net/dev": "Inter-|   Receive\n face |bytes packets\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n  eth1: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(proc, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	du := func(p string) (agent.DiskUse, error) {
		return map[string]agent.DiskUse{"/": {Size: 100, Used: 10}, "/root": {Size: 200, Used: 20}}[p], nil
	}
	st, err := ReadStats(proc, du)
	if err != nil {
		t.Fatal(err)
	}
	want := agent.Stats{
		CPUBusy: 100 + 5 + 50 + 1 + 2 + 3, CPUTotal: 100 + 5 + 50 + 1000 + 20 + 1 + 2 + 3,
		MemTotal: 1012345 * 1024, MemAvailable: 800000 * 1024,
		Load:    [3]float64{0.52, 0.31, 0.10},
		Overlay: agent.DiskUse{Size: 100, Used: 10}, Root: agent.DiskUse{Size: 200, Used: 20},
		RxBytes: 1005, TxBytes: 2007,
	}
	if st != want {
		t.Errorf("ReadStats =\n%+v\nwant\n%+v", st, want)
	}
	// A missing file or disk is an error naming it, with the rest read.
	os.Remove(filepath.Join(proc, "loadavg"))
	st, err = ReadStats(proc, func(p string) (agent.DiskUse, error) {
		if p == "/root" {
			return agent.DiskUse{}, errors.New("not mounted")
		}
		return du(p)
	})
	if err == nil || st.MemTotal != want.MemTotal || st.Overlay != want.Overlay {
		t.Errorf("partial ReadStats = %+v, %v", st, err)
	}
}
