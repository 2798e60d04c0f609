package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/hostcap"
)

// fakeHost is a table row describing a host; probes() turns it into Probes.
type fakeHost struct {
	cpuinfo  string
	kvm      error             // OpenReadWrite("/dev/kvm") result
	bins     map[string]string // LookPath name -> path
	versions map[string]string // path -> `--version` output
	sudoOK   bool              // `sudo -n true` succeeds
	sudoPriv bool              // `sudo -n -l <bangerd> priv` succeeds
	euid     int
	user     string            // the effective user's name ("" = unknown)
	files    map[string]string // other files ReadFile finds
	free     uint64
	sbin     []string // extra executables that exist only in /usr/sbin
	calls    *[]string
}

type fakeInfo struct{ mode fs.FileMode }

func (f fakeInfo) Name() string       { return "x" }
func (f fakeInfo) Size() int64        { return 1 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return nil }

func (h fakeHost) probes() hostcap.Probes {
	return hostcap.Probes{
		ReadFile: func(path string) ([]byte, error) {
			if path == "/proc/cpuinfo" {
				return []byte(h.cpuinfo), nil
			}
			if b, ok := h.files[path]; ok {
				return []byte(b), nil
			}
			return nil, fs.ErrNotExist
		},
		OpenReadWrite: func(path string) error {
			switch path {
			case "/dev/kvm":
				return h.kvm
			case "/dev/net/tun":
				return nil
			}
			return fs.ErrNotExist
		},
		LookPath: func(file string) (string, error) {
			if p, ok := h.bins[file]; ok {
				return p, nil
			}
			return "", errors.New("not found")
		},
		Output: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			if h.calls != nil {
				*h.calls = append(*h.calls, name+" "+strings.Join(args, " "))
			}
			switch {
			case len(args) == 1 && args[0] == "--version":
				if v, ok := h.versions[name]; ok {
					return []byte(v), nil
				}
				return nil, errors.New("exec format error")
			case strings.HasSuffix(name, "sudo") && slices.Equal(args, []string{"-n", "true"}):
				if h.sudoOK {
					return nil, nil
				}
				return []byte("sudo: a password is required"), errors.New("exit status 1")
			case strings.HasSuffix(name, "sudo") && len(args) == 5 && args[1] == "-l" && args[3] == "priv" && args[4] != "":
				if h.sudoPriv {
					return nil, nil
				}
				return nil, errors.New("exit status 1")
			}
			return nil, fmt.Errorf("unexpected command %s %v", name, args)
		},
		Geteuid: func() int { return h.euid },
		Username: func() (string, error) {
			if h.user == "" {
				return "", errors.New("unknown user")
			}
			return h.user, nil
		},
		FreeBytes: func(string) (uint64, error) { return h.free, nil },
		Stat: func(path string) (os.FileInfo, error) {
			for _, s := range h.sbin {
				if path == "/usr/sbin/"+s {
					return fakeInfo{0o755}, nil
				}
			}
			if path == "/" || path == "/state" {
				return fakeInfo{fs.ModeDir | 0o700}, nil
			}
			return nil, fs.ErrNotExist
		},
	}
}

const (
	cpuVMX = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae vmx sse2\n\nprocessor\t: 1\nflags\t\t: fpu vme vmx\n"
	cpuSVM = "processor\t: 0\nflags\t\t: fpu svm lm\n"
	cpuPVM = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor with vmx-like name\nflags\t\t: fpu vme de pse tsc msr pae hypervisor\n"
	gib    = 1 << 30
)

// baseBins are the tools of a well-equipped host, without VMMs.
func baseBins(extra map[string]string) map[string]string {
	m := map[string]string{
		"mmdebstrap": "/usr/bin/mmdebstrap", "mkfs.ext4": "/sbin/mkfs.ext4", "resize2fs": "/sbin/resize2fs",
		"debugfs": "/sbin/debugfs", "e2fsck": "/sbin/e2fsck", "ip": "/sbin/ip", "nft": "/sbin/nft",
		"podman": "/usr/bin/podman", "sudo": "/usr/bin/sudo",
	}
	for k, v := range extra {
		if v == "" {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

var (
	fcBins    = map[string]string{"firecracker": "/usr/local/bin/firecracker"}
	qemuBins  = map[string]string{"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64"}
	bothBins  = map[string]string{"firecracker": "/usr/local/bin/firecracker", "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64"}
	fc110     = map[string]string{"/usr/local/bin/firecracker": "Firecracker v1.10.1\n\nSupported snapshot data format versions: v5.0.0\n"}
	fc17      = map[string]string{"/usr/local/bin/firecracker": "Firecracker v1.7.0\n"}
	qemu72    = map[string]string{"/usr/bin/qemu-system-x86_64": "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u1)\nCopyright (c) 2003-2022 Fabrice Bellard\n"}
	bothVers  = merge(fc110, qemu72)
	oldFCQemu = merge(fc17, qemu72)
)

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestRun(t *testing.T) {
	type want struct {
		status api.CheckStatus
		detail string // substring
	}
	tests := []struct {
		name   string
		host   fakeHost
		cfg    func(*config.Config)
		image  string
		want   map[string]want
		wantOK bool
	}{
		{
			name:  "KVM host with firecracker 1.10",
			host:  fakeHost{cpuinfo: cpuVMX, bins: baseBins(fcBins), versions: fc110, free: 100 * gib},
			image: ImagePresent,
			want: map[string]want{
				"kvm":           {StatusOK, "CPU has vmx"},
				"firecracker":   {StatusOK, "1.10.1 (/usr/local/bin/firecracker)"},
				"qemu":          {StatusWarn, "qemu-system-x86_64 not found; Firecracker is used instead"},
				"privilege":     {StatusOK, "running as root"},
				"disk":          {StatusOK, "100.0 GiB free in /state/banger"},
				"default image": {StatusOK, "debian-12 present"},
			},
			wantOK: true,
		},
		{
			name:  "AMD KVM host with both VMMs",
			host:  fakeHost{cpuinfo: cpuSVM, bins: baseBins(bothBins), versions: bothVers, free: 100 * gib},
			image: ImageBuildable,
			want: map[string]want{
				"kvm":           {StatusOK, "CPU has svm"},
				"firecracker":   {StatusOK, "1.10.1"},
				"qemu":          {StatusOK, "7.2.22 (/usr/bin/qemu-system-x86_64)"},
				"default image": {StatusOK, "not built yet; built on first use"},
			},
			wantOK: true,
		},
		{
			name:  "PVM host like the build machines: TCG only with QEMU",
			host:  fakeHost{cpuinfo: cpuPVM, bins: baseBins(qemuBins), versions: qemu72, free: 100 * gib},
			image: ImageBuildable,
			want: map[string]want{
				"kvm":         {StatusWarn, "TCG only: /dev/kvm is present but the CPU advertises neither vmx nor svm"},
				"firecracker": {StatusWarn, "firecracker not found; QEMU is used instead"},
				"qemu":        {StatusOK, "7.2.22"},
			},
			wantOK: true,
		},
		{
			name: "PVM host with firecracker present but no QEMU",
			host: fakeHost{cpuinfo: cpuPVM, bins: baseBins(fcBins), versions: fc110, free: 100 * gib},
			want: map[string]want{
				"kvm":         {StatusFail, "and QEMU is not installed: no VMM can run"},
				"firecracker": {StatusOK, "unused while KVM is not usable"},
				"qemu":        {StatusFail, "qemu-system-x86_64 not found"},
			},
		},
		{
			name: "no /dev/kvm, QEMU present",
			host: fakeHost{cpuinfo: cpuVMX, kvm: fs.ErrNotExist, bins: baseBins(qemuBins), versions: qemu72, free: 100 * gib},
			want: map[string]want{
				"kvm":  {StatusWarn, "TCG only: /dev/kvm does not exist"},
				"qemu": {StatusOK, "7.2.22"},
			},
			wantOK: true,
		},
		{
			name: "no /dev/kvm and no VMM at all",
			host: fakeHost{cpuinfo: cpuVMX, kvm: fs.ErrNotExist, bins: baseBins(nil), free: 100 * gib},
			want: map[string]want{
				"kvm":         {StatusFail, "/dev/kvm does not exist, and QEMU is not installed"},
				"firecracker": {StatusFail, "firecracker not found, and QEMU is not installed either"},
				"qemu":        {StatusFail, "qemu-system-x86_64 not found"},
			},
		},
		{
			name:   "/dev/kvm not writable",
			host:   fakeHost{cpuinfo: cpuVMX, kvm: fs.ErrPermission, bins: baseBins(bothBins), versions: bothVers, free: 100 * gib},
			want:   map[string]want{"kvm": {StatusWarn, "TCG only: /dev/kvm is not read-write for this user"}},
			wantOK: true,
		},
		{
			name: "firecracker too old, QEMU present",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: oldFCQemu, free: 100 * gib},
			want: map[string]want{
				"kvm":         {StatusOK, "vmx"},
				"firecracker": {StatusWarn, "firecracker 1.7.0 at /usr/local/bin/firecracker is too old: need 1.8 or newer"},
			},
			wantOK: true,
		},
		{
			name: "firecracker too old, no QEMU",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(fcBins), versions: fc17, free: 100 * gib},
			want: map[string]want{
				"firecracker": {StatusFail, "too old"},
				"qemu":        {StatusFail, "not found"},
			},
		},
		{
			name: "firecracker_bin from config, KVM forced but unusable",
			host: fakeHost{cpuinfo: cpuPVM, bins: baseBins(merge(qemuBins, map[string]string{"/opt/fc": "/opt/fc"})), versions: merge(qemu72, map[string]string{"/opt/fc": "Firecracker v1.8.0"}), free: 100 * gib},
			cfg:  func(c *config.Config) { c.FirecrackerBin = "/opt/fc"; c.Accel = "kvm" },
			want: map[string]want{
				"kvm":         {StatusFail, `config sets accel = "kvm"`},
				"firecracker": {StatusOK, "1.8.0 (/opt/fc)"},
			},
		},
		{
			name: "vmm = qemu but QEMU missing",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(fcBins), versions: fc110, free: 100 * gib},
			cfg:  func(c *config.Config) { c.VMM = "qemu" },
			want: map[string]want{"qemu": {StatusFail, `config sets vmm = "qemu"`}},
		},
		{
			name: "no sudo as non-root",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: bothVers, euid: 1000, free: 100 * gib},
			want: map[string]want{"privilege": {StatusFail, "not root and `sudo -n` is not allowed"}},
		},
		{
			name: "sudo not installed as non-root",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(merge(bothBins, map[string]string{"sudo": ""})), versions: bothVers, euid: 1000, free: 100 * gib},
			want: map[string]want{"privilege": {StatusFail, "sudo is not installed"}},
		},
		{
			name:  "non-root without subordinate ids cannot build the default image",
			host:  fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: bothVers, euid: 1000, user: "dev", sudoOK: true, free: 100 * gib},
			image: ImageBuildable,
			want:  map[string]want{"default image": {StatusFail, "cannot be built as dev: /etc/subuid: file does not exist"}},
		},
		{
			name: "non-root with too few subordinate ids",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: bothVers, euid: 1000, user: "dev", sudoOK: true, free: 100 * gib,
				files: map[string]string{"/etc/subuid": "dev:100000:1000\n", "/etc/subgid": "dev:100000:65536\n"}},
			image: ImageBuildable,
			want:  map[string]want{"default image": {StatusFail, "/etc/subuid gives dev 1000 ids, 65536 needed"}},
		},
		{
			name: "non-root with subordinate ids (by uid, in two ranges) builds on first use",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: bothVers, euid: 1000, user: "dev", sudoOK: true, free: 100 * gib,
				files: map[string]string{"/etc/subuid": "other:1:99999\n1000:100000:30000\ndev:200000:35536\n", "/etc/subgid": "dev:100000:65536\n"}},
			image:  ImageBuildable,
			want:   map[string]want{"default image": {StatusOK, "built on first use"}},
			wantOK: true,
		},
		{
			name:   "passwordless sudo as non-root",
			host:   fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: bothVers, euid: 1000, sudoOK: true, free: 100 * gib},
			want:   map[string]want{"privilege": {StatusOK, "sudo -n works"}},
			wantOK: true,
		},
		{
			name: "low disk warns, missing tools",
			host: fakeHost{cpuinfo: cpuVMX, bins: baseBins(merge(bothBins, map[string]string{"podman": "", "mmdebstrap": "", "debugfs": "", "nft": ""})), versions: bothVers, free: 5 * gib},
			want: map[string]want{
				"disk":          {StatusWarn, "5.0 GiB free"},
				"podman/docker": {StatusWarn, "only needed for images built from a Dockerfile"},
				"mmdebstrap":    {StatusWarn, "not found"},
				"e2fsprogs":     {StatusFail, "missing: debugfs"},
				"ip/nft":        {StatusFail, "missing: nft"},
				"default image": {StatusWarn, "state unknown"},
			},
		},
		{
			name:  "very low disk fails; buildable image without mmdebstrap fails",
			host:  fakeHost{cpuinfo: cpuVMX, bins: baseBins(merge(bothBins, map[string]string{"mmdebstrap": ""})), versions: bothVers, free: 1 * gib},
			image: ImageBuildable,
			want: map[string]want{
				"disk":          {StatusFail, "1.0 GiB free"},
				"default image": {StatusFail, "mmdebstrap is missing"},
			},
		},
		{
			name:  "sbin tools off PATH are found; docker instead of podman; missing image",
			host:  fakeHost{cpuinfo: cpuVMX, bins: baseBins(merge(bothBins, map[string]string{"mkfs.ext4": "", "e2fsck": "", "podman": "", "docker": "/usr/bin/docker"})), versions: bothVers, sbin: []string{"mkfs.ext4", "e2fsck"}, free: 50 * gib},
			image: ImageMissing,
			want: map[string]want{
				"e2fsprogs":     {StatusOK, "mkfs.ext4"},
				"podman/docker": {StatusOK, "/usr/bin/docker"},
				"default image": {StatusFail, "missing"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default()
			c.Path = "/cfg/config.toml"
			if tt.cfg != nil {
				tt.cfg(c)
			}
			in := Input{Config: c, Paths: config.Paths{StateDir: "/state/banger"}, Host: config.HostInfo{CPUs: 16, MemoryMiB: 64 << 10}}
			if tt.image != "" {
				in.DefaultImage = func(context.Context) (string, string) { return tt.image, "" }
			}
			rep := Run(context.Background(), tt.host.probes(), in)
			got := map[string]Check{}
			for _, ch := range rep.Checks {
				got[ch.Name] = ch
			}
			for name, w := range tt.want {
				ch, ok := got[name]
				if !ok {
					t.Errorf("no check %q", name)
					continue
				}
				if ch.Status != w.status || !strings.Contains(ch.Detail, w.detail) {
					t.Errorf("check %q = %s %q, want %s containing %q", name, ch.Status, ch.Detail, w.status, w.detail)
				}
				if ch.Status != StatusOK && ch.Fix == "" && name != "default image" && name != "disk" {
					t.Errorf("check %q is %s without a fix hint", name, ch.Status)
				}
			}
			if rep.OK != tt.wantOK {
				t.Errorf("OK = %v, want %v\n%+v", rep.OK, tt.wantOK, rep.Checks)
			}
			vd := got["vm defaults"]
			if want := "4 vcpu (auto) · 8192 MiB (auto) · 8G disk (builtin); set [vm_defaults] in /cfg/config.toml"; vd.Detail != want || vd.Status != StatusOK {
				t.Errorf("vm defaults = %s %q, want ok %q", vd.Status, vd.Detail, want)
			}
		})
	}
}

func TestPrivilege_sudoersRuleForBangerd(t *testing.T) {
	var calls []string
	h := fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: bothVers, euid: 1000, sudoPriv: true, free: 100 * gib, calls: &calls}
	rep := Run(context.Background(), h.probes(), Input{Config: config.Default(), Paths: config.Paths{StateDir: "/state"}, BangerdPath: "/usr/local/bin/bangerd"})
	for _, ch := range rep.Checks {
		if ch.Name == "privilege" && (ch.Status != StatusOK || !strings.Contains(ch.Detail, "/usr/local/bin/bangerd priv")) {
			t.Errorf("privilege = %+v", ch)
		}
	}
	if !slices.Contains(calls, "/usr/bin/sudo -n -l /usr/local/bin/bangerd priv ensure-bridge") {
		t.Errorf("sudo -l not consulted; calls: %q", calls)
	}
}
