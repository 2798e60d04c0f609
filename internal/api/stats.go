package api

import (
	"context"
	"net/http"
	"net/url"
)

// PathStats reports live resource figures of running VMs (GET; repeat
// ?vm=NAME to choose, none for every running VM).
const PathStats = "/v1/stats"

// VMStats are one VM's live figures over a short interval: from its agent
// (guest CPU, memory, load, disks, network) and from the host (its VMM's
// CPU and resident memory).
type VMStats struct {
	VM       string  `json:"vm"`
	ID       string  `json:"id"`
	Interval float64 `json:"interval_seconds"`
	// CPUPercent is the share of the guest's vCPUs that were busy, 0-100.
	CPUPercent float64    `json:"cpu_percent"`
	MemTotal   uint64     `json:"mem_total"`
	MemUsed    uint64     `json:"mem_used"` // total less available
	Load       [3]float64 `json:"load"`
	Root       DiskUse    `json:"root"`    // the /root work disk
	Overlay    DiskUse    `json:"overlay"` // the root filesystem's writable layer
	RxBytes    uint64     `json:"rx_bytes"`
	TxBytes    uint64     `json:"tx_bytes"`
	RxRate     float64    `json:"rx_bytes_per_second"`
	TxRate     float64    `json:"tx_bytes_per_second"`
	// VMMCPUPercent is the VMM process's CPU use as a percentage of one
	// host CPU (a busy 2-vCPU guest can show 200); VMMRSS its resident
	// memory in bytes.
	VMMCPUPercent float64 `json:"vmm_cpu_percent"`
	VMMRSS        int64   `json:"vmm_rss"`
	// Error says why the guest's figures are missing (its agent did not
	// answer); the host's are still there.
	Error string `json:"error,omitempty"`
}

// DiskUse is a filesystem's size and used bytes.
type DiskUse struct {
	Size uint64 `json:"size"`
	Used uint64 `json:"used"`
}

// Stats samples the running VMs named by refs (every running VM when
// refs is empty); the call takes about a second.
func (c *Client) Stats(ctx context.Context, refs ...string) ([]VMStats, error) {
	q := url.Values{"vm": refs}
	var out []VMStats
	err := c.Do(ctx, http.MethodGet, PathStats+"?"+q.Encode(), nil, &out)
	return out, err
}
