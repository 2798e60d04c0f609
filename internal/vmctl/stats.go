package vmctl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/procstat"
	"banger/internal/store"
	"banger/internal/vmm"
)

// StatsInterval is how far apart the two readings of Stats are.
const StatsInterval = time.Second

// statsReadTimeout bounds one reading of a guest's agent.
const statsReadTimeout = 3 * time.Second

// Stats samples the running VMs named by refs, or every running VM when
// refs is empty: two readings interval apart of the guest's counters
// (from its agent) and of its VMM process (from /proc), all VMs at once.
// A named VM that is not running is an error; a guest whose agent does
// not answer keeps its host figures and says why in Error.
func (m *Manager) Stats(ctx context.Context, refs []string, interval time.Duration) ([]api.VMStats, error) {
	type target struct {
		vm store.VM
		h  vmm.Handles
		c  *agentclient.Client
	}
	var targets []target
	if len(refs) == 0 {
		vms, err := m.opt.Store.ListVMs(ctx)
		if err != nil {
			return nil, err
		}
		for _, vm := range vms {
			if h, ok := m.alive(vm.ID); ok && !h.Paused {
				targets = append(targets, target{vm, h, m.agentClient(vm, h)})
			}
		}
	} else {
		for _, ref := range refs {
			c, vm, err := m.Agent(ctx, ref)
			if err != nil {
				return nil, err
			}
			h, _ := m.alive(vm.ID)
			targets = append(targets, target{vm, h, c})
		}
	}
	out := make([]api.VMStats, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = sampleVM(ctx, t.vm, t.h.PID, t.c, interval)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// reading is one sample of a VM.
type reading struct {
	at    time.Time
	guest agent.Stats
	gerr  error
	proc  procstat.Sample
	perr  error
}

func read(ctx context.Context, pid int, c *agentclient.Client) reading {
	r := reading{at: time.Now()}
	r.proc, r.perr = procstat.Read(pid)
	gctx, cancel := context.WithTimeout(ctx, statsReadTimeout)
	defer cancel()
	r.guest, r.gerr = c.Stats(gctx)
	return r
}

// sampleVM takes two readings interval apart and turns them into figures.
func sampleVM(ctx context.Context, vm store.VM, pid int, c *agentclient.Client, interval time.Duration) api.VMStats {
	a := read(ctx, pid, c)
	select {
	case <-time.After(interval):
	case <-ctx.Done():
	}
	b := read(ctx, pid, c)
	st := figures(a, b)
	st.VM, st.ID = vm.Name, vm.ID
	return st
}

// figures computes a VM's figures from two readings. The guest's
// counters are the guest's word: a counter that went backwards gives a
// rate of 0, a busy count above the total is capped, nothing is negative
// or not a number.
func figures(a, b reading) api.VMStats {
	secs := b.at.Sub(a.at).Seconds()
	st := api.VMStats{Interval: secs}
	if a.perr == nil && b.perr == nil {
		st.VMMCPUPercent = procstat.CPUPercent(a.proc, b.proc, b.at.Sub(a.at))
		st.VMMRSS = b.proc.RSSBytes
	}
	if err := errors.Join(a.gerr, b.gerr); err != nil {
		st.Error = fmt.Sprintf("guest agent: %v", err)
		return st
	}
	g0, g1 := a.guest, b.guest
	if g1.CPUTotal > g0.CPUTotal && g1.CPUBusy >= g0.CPUBusy {
		st.CPUPercent = min(100, 100*float64(g1.CPUBusy-g0.CPUBusy)/float64(g1.CPUTotal-g0.CPUTotal))
	}
	st.MemTotal = g1.MemTotal
	st.MemUsed = g1.MemTotal - min(g1.MemAvailable, g1.MemTotal)
	for i, l := range g1.Load {
		if l > 0 && !math.IsInf(l, 0) {
			st.Load[i] = l
		}
	}
	disk := func(d agent.DiskUse) api.DiskUse { return api.DiskUse{Size: d.Size, Used: min(d.Used, d.Size)} }
	st.Root, st.Overlay = disk(g1.Root), disk(g1.Overlay)
	st.RxBytes, st.TxBytes = g1.RxBytes, g1.TxBytes
	rate := func(x0, x1 uint64) float64 {
		if x1 < x0 || secs <= 0 {
			return 0
		}
		return float64(x1-x0) / secs
	}
	st.RxRate, st.TxRate = rate(g0.RxBytes, g1.RxBytes), rate(g0.TxBytes, g1.TxBytes)
	return st
}
