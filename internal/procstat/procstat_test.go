package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseStatTicks(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want uint64
		err  bool
	}{
		{"qemu", "1234 (qemu-system-x86) S 1 1234 1234 0 -1 4194624 100 0 0 0 700 50 0 0 20 0 3 0 100 0 0", 750, false},
		{"name with spaces and parens", "99 (a) b (c) R 1 99 99 0 -1 0 0 0 0 0 12 30 0 0 20 0 1 0 5 0 0", 42, false},
		{"no name", "99 a R 1", 0, true},
		{"short", "99 (x) R 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 zz 1 0 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatTicks([]byte(tt.stat))
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("parseStatTicks = %d, %v; want %d, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestParseStatusRSS(t *testing.T) {
	tests := []struct {
		status string
		want   int64
		err    bool
	}{
		{"Name:\tqemu\nVmPeak:\t 9999 kB\nVmRSS:\t  204800 kB\nThreads: 3\n", 204800 * 1024, false},
		{"Name:\tkthreadd\nThreads: 1\n", 0, false},
		{"VmRSS: lots kB\n", 0, true},
	}
	for _, tt := range tests {
		got, err := parseStatusRSS([]byte(tt.status))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseStatusRSS(%q) = %d, %v; want %d, error %v", tt.status, got, err, tt.want, tt.err)
		}
	}
}

func TestRead_Self(t *testing.T) {
	// Burn some CPU so the second sample moves.
	a, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a.RSSBytes <= 0 {
		t.Fatalf("RSS of this test process = %d", a.RSSBytes)
	}
	deadline := time.Now().Add(5 * time.Second)
	var b Sample
	for x := 0; time.Now().Before(deadline); x++ {
		if b, err = Read(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		if b.CPUTicks > a.CPUTicks {
			break
		}
	}
	if b.CPUTicks <= a.CPUTicks {
		t.Fatalf("CPU ticks did not grow while spinning: %d -> %d", a.CPUTicks, b.CPUTicks)
	}
	if _, err := Read(1 << 30); err == nil {
		t.Error("Read of a PID that cannot exist succeeded")
	}
}

func TestCPUPercent(t *testing.T) {
	tests := []struct {
		prev, cur uint64
		elapsed   time.Duration
		want      float64
	}{
		{100, 150, time.Second, 50},
		{100, 300, time.Second, 200}, // two busy vCPUs
		{100, 100, time.Second, 0},
		{200, 100, time.Second, 0}, // PID reused: no negative use
		{100, 150, 0, 0},
	}
	for _, tt := range tests {
		got := CPUPercent(Sample{CPUTicks: tt.prev}, Sample{CPUTicks: tt.cur}, tt.elapsed)
		if got != tt.want {
			t.Errorf("CPUPercent(%d→%d in %s) = %v, want %v", tt.prev, tt.cur, tt.elapsed, got, tt.want)
		}
	}
}
