package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"banger/internal/api"
	"banger/internal/units"
)

// HostInfo is what the VM-defaults heuristics know about the host. Zero
// fields mean "unknown" and make the resolver fall back to built-ins.
type HostInfo struct {
	CPUs      int
	MemoryMiB int
}

// ProbeHost reads the host's CPU count (runtime.NumCPU, which honours CPU
// affinity) and total memory (/proc/meminfo MemTotal).
func ProbeHost() (HostInfo, error) {
	return probeHost(runtime.NumCPU(), os.ReadFile)
}

// probeHost is ProbeHost over a CPU count and a file reader, so tests can
// feed it a fake /proc/meminfo.
func probeHost(cpus int, readFile func(string) ([]byte, error)) (HostInfo, error) {
	h := HostInfo{CPUs: cpus}
	data, err := readFile("/proc/meminfo")
	if err != nil {
		return h, fmt.Errorf("probe host memory: %w", err)
	}
	kib, err := memTotalKiB(data)
	if err != nil {
		return h, fmt.Errorf("probe host memory: %w", err)
	}
	h.MemoryMiB = int(kib / 1024)
	return h, nil
}

func memTotalKiB(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no MemTotal line in /proc/meminfo")
}

// Source says where a resolved default came from.
type Source string

// Provenance of a resolved VM default.
const (
	SourceConfig  Source = "config"  // [vm_defaults] in config.toml
	SourceAuto    Source = "auto"    // derived from the host's CPUs and memory
	SourceBuiltin Source = "builtin" // banger's built-in constant
)

// Built-in VM defaults and limits.
const (
	BuiltinVCPU      = 2
	BuiltinMemoryMiB = 2048
	BuiltinDiskBytes = 8 << 30
	MinMemoryMiB     = api.MinMemoryMiB // the limits are api.VMSpec's
	MinDiskBytes     = api.MinDiskBytes
	MaxVCPU          = api.MaxVCPU

	autoMaxVCPU      = 4
	autoMaxMemoryMiB = 8192
)

// ResolvedDefaults is the default VM shape with the provenance of each field.
type ResolvedDefaults struct {
	VCPU         int
	MemoryMiB    int
	DiskBytes    int64
	VCPUSource   Source
	MemorySource Source
	DiskSource   Source
}

// ResolveVMDefaults picks the default VM shape, per field, from three
// layers: [vm_defaults] in c, then host heuristics, then built-ins.
//
//   - vcpu: config; else host CPUs/4, capped at 4, at least 1 ("auto");
//     else BuiltinVCPU when the CPU count is unknown.
//   - memory: config; else host RAM/8 capped at 8 GiB ("auto"); when that
//     is below BuiltinMemoryMiB, or RAM is unknown, BuiltinMemoryMiB
//     ("builtin": the floor won).
//   - disk: config; else BuiltinDiskBytes (there is no disk heuristic).
//
// c may be nil. c is expected to be validated; an unparsable disk_size
// falls back to the built-in.
func ResolveVMDefaults(c *Config, h HostInfo) ResolvedDefaults {
	var vd VMDefaults
	if c != nil {
		vd = c.VMDefaults
	}
	r := ResolvedDefaults{
		VCPU: BuiltinVCPU, VCPUSource: SourceBuiltin,
		MemoryMiB: BuiltinMemoryMiB, MemorySource: SourceBuiltin,
		DiskBytes: BuiltinDiskBytes, DiskSource: SourceBuiltin,
	}
	switch {
	case vd.VCPU > 0:
		r.VCPU, r.VCPUSource = vd.VCPU, SourceConfig
	case h.CPUs > 0:
		r.VCPU, r.VCPUSource = max(1, min(autoMaxVCPU, h.CPUs/4)), SourceAuto
	}
	switch {
	case vd.MemoryMiB > 0:
		r.MemoryMiB, r.MemorySource = vd.MemoryMiB, SourceConfig
	case h.MemoryMiB/8 >= BuiltinMemoryMiB:
		r.MemoryMiB, r.MemorySource = min(autoMaxMemoryMiB, h.MemoryMiB/8), SourceAuto
	}
	if vd.DiskSize > 0 {
		r.DiskBytes, r.DiskSource = int64(vd.DiskSize), SourceConfig
	}
	return r
}

// SpecLine renders the shape as printed before every create:
// "spec: 4 vcpu · 8192 MiB · 8G disk".
func (r ResolvedDefaults) SpecLine() string {
	return fmt.Sprintf("spec: %d vcpu · %d MiB · %s disk", r.VCPU, r.MemoryMiB, units.FormatSize(r.DiskBytes))
}

// Provenance renders the shape with each field's source:
// "4 vcpu (auto) · 8192 MiB (auto) · 8G disk (builtin)".
func (r ResolvedDefaults) Provenance() string {
	return fmt.Sprintf("%d vcpu (%s) · %d MiB (%s) · %s disk (%s)",
		r.VCPU, r.VCPUSource, r.MemoryMiB, r.MemorySource, units.FormatSize(r.DiskBytes), r.DiskSource)
}
