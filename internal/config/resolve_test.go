package config

import (
	"os"
	"strings"
	"testing"
)

func TestResolveVMDefaults(t *testing.T) {
	const gib = 1024
	tests := []struct {
		name string
		vd   VMDefaults
		host HostInfo
		want ResolvedDefaults
		spec string
	}{
		{
			name: "8 cores 32 GiB",
			host: HostInfo{CPUs: 8, MemoryMiB: 32 * gib},
			want: ResolvedDefaults{2, 4096, 8 << 30, SourceAuto, SourceAuto, SourceBuiltin},
			spec: "spec: 2 vcpu · 4096 MiB · 8G disk",
		},
		{
			name: "16 cores 64 GiB",
			host: HostInfo{CPUs: 16, MemoryMiB: 64 * gib},
			want: ResolvedDefaults{4, 8192, 8 << 30, SourceAuto, SourceAuto, SourceBuiltin},
			spec: "spec: 4 vcpu · 8192 MiB · 8G disk",
		},
		{
			name: "caps: 128 cores 1 TiB",
			host: HostInfo{CPUs: 128, MemoryMiB: 1024 * gib},
			want: ResolvedDefaults{4, 8192, 8 << 30, SourceAuto, SourceAuto, SourceBuiltin},
		},
		{
			name: "2 cores tiny RAM: vcpu floor 1, memory floor builtin",
			host: HostInfo{CPUs: 2, MemoryMiB: 4 * gib},
			want: ResolvedDefaults{1, BuiltinMemoryMiB, 8 << 30, SourceAuto, SourceBuiltin, SourceBuiltin},
			spec: "spec: 1 vcpu · 2048 MiB · 8G disk",
		},
		{
			name: "RAM exactly at the floor is auto",
			host: HostInfo{CPUs: 4, MemoryMiB: 16 * gib},
			want: ResolvedDefaults{1, 2048, 8 << 30, SourceAuto, SourceAuto, SourceBuiltin},
		},
		{
			name: "unknown host",
			want: ResolvedDefaults{BuiltinVCPU, BuiltinMemoryMiB, BuiltinDiskBytes, SourceBuiltin, SourceBuiltin, SourceBuiltin},
			spec: "spec: 2 vcpu · 2048 MiB · 8G disk",
		},
		{
			name: "config overrides all",
			vd:   VMDefaults{VCPU: 6, MemoryMiB: 1024, DiskSize: 3 << 29},
			host: HostInfo{CPUs: 16, MemoryMiB: 64 * gib},
			want: ResolvedDefaults{6, 1024, 1536 << 20, SourceConfig, SourceConfig, SourceConfig},
			spec: "spec: 6 vcpu · 1024 MiB · 1536M disk",
		},
		{
			name: "config overrides one field",
			vd:   VMDefaults{MemoryMiB: 512},
			host: HostInfo{CPUs: 16, MemoryMiB: 64 * gib},
			want: ResolvedDefaults{4, 512, 8 << 30, SourceAuto, SourceConfig, SourceBuiltin},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.VMDefaults = tt.vd
			got := ResolveVMDefaults(c, tt.host)
			if got != tt.want {
				t.Errorf("ResolveVMDefaults = %+v, want %+v", got, tt.want)
			}
			if tt.spec != "" && got.SpecLine() != tt.spec {
				t.Errorf("SpecLine = %q, want %q", got.SpecLine(), tt.spec)
			}
		})
	}
	if got := ResolveVMDefaults(nil, HostInfo{}); got.VCPUSource != SourceBuiltin {
		t.Errorf("nil config: %+v", got)
	}
}

func TestResolvedDefaults_Provenance(t *testing.T) {
	r := ResolvedDefaults{4, 8192, 8 << 30, SourceAuto, SourceAuto, SourceBuiltin}
	if got, want := r.Provenance(), "4 vcpu (auto) · 8192 MiB (auto) · 8G disk (builtin)"; got != want {
		t.Errorf("Provenance = %q, want %q", got, want)
	}
}

func TestProbeHost(t *testing.T) {
	tests := []struct {
		name    string
		meminfo string
		readErr error
		want    HostInfo
		wantErr string
	}{
		{"meminfo", "MemFree: 5 kB\nMemTotal:       24589012 kB\nSwapTotal: 0 kB\n", nil, HostInfo{CPUs: 6, MemoryMiB: 24012}, ""},
		{"under a MiB", "MemTotal: 1000 kB\n", nil, HostInfo{CPUs: 6}, ""},
		{"no MemTotal", "MemFree: 5 kB\n", nil, HostInfo{CPUs: 6}, "probe host memory: no MemTotal line"},
		{"garbage MemTotal", "MemTotal: lots kB\n", nil, HostInfo{CPUs: 6}, "probe host memory: strconv.ParseInt"},
		{"unreadable", "", os.ErrPermission, HostInfo{CPUs: 6}, "probe host memory: permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked string
			h, err := probeHost(6, func(path string) ([]byte, error) {
				asked = path
				return []byte(tt.meminfo), tt.readErr
			})
			if asked != "/proc/meminfo" {
				t.Errorf("read %q, want /proc/meminfo", asked)
			}
			if h != tt.want {
				t.Errorf("probeHost = %+v, want %+v", h, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("probeHost error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestMemTotalKiB(t *testing.T) {
	n, err := memTotalKiB([]byte("MemFree: 5 kB\nMemTotal:       24589012 kB\n"))
	if err != nil || n != 24589012 {
		t.Errorf("memTotalKiB = %d, %v", n, err)
	}
	if _, err := memTotalKiB([]byte("MemFree: 5 kB\n")); err == nil {
		t.Error("memTotalKiB without MemTotal succeeded")
	}
}
