package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite golden files")

func goldenSpec() vmm.Spec {
	return vmm.Spec{
		VMID: "01JABCDEF", Name: "t1", VCPU: 2, MemoryMiB: 1024,
		BzImage: "/state/images/i1/vmlinuz", Initrd: "/state/images/i1/initrd.img",
		Cmdline: "console=ttyS0 reboot=k panic=-1 root=LABEL=banger-root ro rootwait",
		Drives: []vmm.Drive{
			{ID: "rootfs", Path: "/state/images/i1/rootfs.ext4", ReadOnly: true},
			{ID: "overlay", Path: "/state/vms/v1/overlay.ext4"},
			{ID: "work", Path: "/state/vms/v1/work.ext4"},
			{ID: "config", Path: "/state/vms/v1/config,1.ext4", ReadOnly: true},
		},
		Tap: "bgtap3", MAC: "06:00:c0:00:02:03", CID: 7,
		Dir: "/state/vms/v1",
	}
}

func TestCmdline_Golden(t *testing.T) {
	tests := []struct {
		name  string
		accel string
		opts  Options
		noTap bool
	}{
		{name: "tcg-serial", accel: vmm.AccelTCG, opts: Options{HostKHz: 2000000}},
		{name: "kvm-serial", accel: vmm.AccelKVM, opts: Options{HostKHz: 2000000, Binary: "/usr/bin/qemu-system-x86_64"}},
		{name: "kvm-serial-notap", accel: vmm.AccelKVM, opts: Options{}, noTap: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := goldenSpec()
			s.Accel = tt.accel
			if tt.noTap {
				s.Tap, s.MAC = "", ""
			}
			got := strings.Join(Cmdline(s, tt.opts), "\n") + "\n"
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Fatalf("argv (-golden +got):\n%s", diff)
			}
		})
	}
}

func TestKernelCmdline(t *testing.T) {
	s := vmm.Spec{Cmdline: "console=ttyS0"}
	tests := []struct {
		accel string
		khz   int
		want  string
	}{
		{vmm.AccelTCG, 2400000, "console=ttyS0 tsc_early_khz=2400000 tsc=reliable"},
		{vmm.AccelTCG, 0, "console=ttyS0"},
		{vmm.AccelKVM, 2400000, "console=ttyS0"},
	}
	for _, tt := range tests {
		s.Accel = tt.accel
		if got := KernelCmdline(s, Options{HostKHz: tt.khz}); got != tt.want {
			t.Errorf("KernelCmdline(%s, %d) = %q, want %q", tt.accel, tt.khz, got, tt.want)
		}
	}
}

func TestParseCPUInfoKHz(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"processor\t: 0\ncpu MHz\t\t: 2000.000\ncpu MHz\t\t: 3000.000\n", 2000000, false},
		{"cpu MHz\t\t: 2893.204\n", 2893204, false},
		{"processor\t: 0\n", 0, true},
		{"cpu MHz\t\t: fast\n", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseCPUInfoKHz(strings.NewReader(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseCPUInfoKHz(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
