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

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"8G", 8 << 30, true},
		{"8g", 8 << 30, true},
		{"8GiB", 8 << 30, true},
		{"8Gi", 8 << 30, true},
		{"8GB", 8 << 30, true},
		{"512M", 512 << 20, true},
		{"1T", 1 << 40, true},
		{"4K", 4096, true},
		{"1.5G", 1536 << 20, true},
		{"0.5K", 512, true},
		{"1.0001K", 1024, true}, // rounded down to whole bytes
		{"4096", 4096, true},
		{"4096B", 4096, true},
		{" 2G ", 2 << 30, true},
		{"0", 0, true},
		{"", 0, false},
		{"G", 0, false},
		{"-1G", 0, false},
		{"1e3", 0, false},
		{"1/2G", 0, false},
		{"8 gigs", 0, false},
		{"8I", 0, false},
		{"8P", 0, false},
		{"9999999999T", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if !tt.ok && err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", tt.in, got)
		}
	}
}

func TestFormatSize_roundTrip(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0"}, {8 << 30, "8G"}, {1536 << 20, "1536M"}, {1 << 40, "1T"}, {3 << 10, "3K"}, {4097, "4097"}, {1<<62 + 1, "4611686018427387905"},
	} {
		if got := FormatSize(tt.n); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
		back, err := ParseSize(FormatSize(tt.n))
		if err != nil || back != tt.n {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tt.n, back, err)
		}
	}
	for _, s := range []string{"8G", "512M", "1T", "7K", "123"} {
		n, err := ParseSize(s)
		if err != nil || FormatSize(n) != s {
			t.Errorf("FormatSize(ParseSize(%q)) = %q, %v", s, FormatSize(n), err)
		}
	}
}
