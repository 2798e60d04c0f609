package vmctl

import (
	"errors"
	"math"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/procstat"
)

func TestFigures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := reading{at: t0, proc: procstat.Sample{CPUTicks: 1000, RSSBytes: 1 << 20},
		guest: agent.Stats{CPUBusy: 100, CPUTotal: 1000, RxBytes: 1000, TxBytes: 5000}}
	b := reading{at: t0.Add(2 * time.Second), proc: procstat.Sample{CPUTicks: 1100, RSSBytes: 2 << 20},
		guest: agent.Stats{CPUBusy: 150, CPUTotal: 1200, MemTotal: 1000, MemAvailable: 400, Load: [3]float64{1.5, 1, 0.5},
			Root: agent.DiskUse{Size: 100, Used: 30}, Overlay: agent.DiskUse{Size: 50, Used: 5}, RxBytes: 3000, TxBytes: 5000}}
	st := figures(a, b)
	if st.CPUPercent != 25 || st.MemUsed != 600 || st.MemTotal != 1000 || st.RxRate != 1000 || st.TxRate != 0 ||
		st.VMMCPUPercent != 50 || st.VMMRSS != 2<<20 || st.Root.Used != 30 || st.Load[0] != 1.5 || st.Error != "" {
		t.Errorf("figures = %+v", st)
	}

	// A hostile guest: counters backwards, busy beyond total, available
	// beyond total, used beyond size, loads not numbers.
	h := b
	h.guest = agent.Stats{CPUBusy: 1e18, CPUTotal: 1001, MemTotal: 10, MemAvailable: 1e15, RxBytes: 1, TxBytes: 1,
		Load: [3]float64{math.Inf(1), -5, 2}, Root: agent.DiskUse{Size: 1, Used: 1 << 60}}
	st = figures(a, h)
	if st.CPUPercent != 100 || st.MemUsed != 0 || st.RxRate != 0 || st.TxRate != 0 || st.Load != [3]float64{0, 0, 2} || st.Root.Used != 1 {
		t.Errorf("hostile figures = %+v", st)
	}
	h.guest.CPUTotal = 999 // total backwards
	if st = figures(a, h); st.CPUPercent != 0 {
		t.Errorf("cpu with the total going backwards = %v", st.CPUPercent)
	}

	// An agent that does not answer: host figures stay, the error says why.
	b.gerr = errors.New("agent GET /stats: timeout")
	st = figures(a, b)
	if st.Error == "" || st.VMMRSS != 2<<20 || st.CPUPercent != 0 {
		t.Errorf("figures without the agent = %+v", st)
	}
}
