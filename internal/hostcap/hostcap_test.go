package hostcap

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fake is a table row describing a host; probes() turns it into Probes.
type fake struct {
	cpuinfo    string
	cpuinfoErr error
	kvm        error             // OpenReadWrite("/dev/kvm") result
	bins       map[string]string // LookPath name -> path
	versions   map[string]string // path -> `--version` output
	sbin       []string          // executables only in /usr/sbin
}

type fakeInfo struct{ mode fs.FileMode }

func (f fakeInfo) Name() string       { return "x" }
func (f fakeInfo) Size() int64        { return 1 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return nil }

func (h fake) probes() Probes {
	return Probes{
		ReadFile: func(path string) ([]byte, error) {
			if path == "/proc/cpuinfo" {
				return []byte(h.cpuinfo), h.cpuinfoErr
			}
			return nil, fs.ErrNotExist
		},
		OpenReadWrite: func(path string) error {
			if path != "/dev/kvm" {
				return fs.ErrNotExist
			}
			return h.kvm
		},
		LookPath: func(file string) (string, error) {
			if p, ok := h.bins[file]; ok {
				return p, nil
			}
			return "", errors.New("not found")
		},
		Output: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			if len(args) == 1 && args[0] == "--version" {
				if v, ok := h.versions[name]; ok {
					return []byte(v), nil
				}
				return nil, errors.New("exec format error")
			}
			return nil, errors.New("unexpected command")
		},
		Stat: func(path string) (os.FileInfo, error) {
			for _, s := range h.sbin {
				if path == "/usr/sbin/"+s {
					return fakeInfo{0o755}, nil
				}
			}
			if path == "/usr/sbin/notexec" {
				return fakeInfo{0o644}, nil
			}
			if path == "/usr/sbin/adir" {
				return fakeInfo{fs.ModeDir | 0o755}, nil
			}
			return nil, fs.ErrNotExist
		},
	}
}

const (
	cpuVMX = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae vmx sse2\n\nprocessor\t: 1\nflags\t\t: fpu vme vmx\n"
	cpuSVM = "processor\t: 0\nflags\t\t: fpu svm lm\n"
	cpuPVM = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor with vmx-like name\nflags\t\t: fpu vme de pse tsc msr pae hypervisor\n"
)

func TestKVMUsable(t *testing.T) {
	const pvmReason = "/dev/kvm is present but the CPU advertises neither vmx nor svm (paravirtual KVM such as PVM)"
	tests := []struct {
		name   string
		host   fake
		ok     bool
		reason string
	}{
		{"vmx", fake{cpuinfo: cpuVMX}, true, "/dev/kvm read-write, CPU has vmx"},
		{"svm", fake{cpuinfo: cpuSVM}, true, "/dev/kvm read-write, CPU has svm"},
		{"pvm", fake{cpuinfo: cpuPVM}, false, pvmReason},
		{"missing", fake{cpuinfo: cpuVMX, kvm: fs.ErrNotExist}, false, "/dev/kvm does not exist"},
		{"permission", fake{cpuinfo: cpuVMX, kvm: fs.ErrPermission}, false, "/dev/kvm is not read-write for this user"},
		{"wrapped permission", fake{cpuinfo: cpuVMX, kvm: &fs.PathError{Op: "open", Path: "/dev/kvm", Err: syscall.EACCES}}, false, "/dev/kvm is not read-write for this user"},
		{"busy", fake{cpuinfo: cpuVMX, kvm: syscall.EBUSY}, false, "cannot open /dev/kvm: device or resource busy"},
		{"cpuinfo unreadable", fake{cpuinfoErr: fs.ErrPermission}, false, "cannot read /proc/cpuinfo: permission denied"},
		{"flag only in another field", fake{cpuinfo: "model name : vmx svm\nflags : fpu\n"}, false, pvmReason},
		{"flag as a substring", fake{cpuinfo: "flags : fpu vmxe svmx\n"}, false, pvmReason},
		{"empty cpuinfo", fake{}, false, pvmReason},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := KVMUsable(tt.host.probes())
			if ok != tt.ok || reason != tt.reason {
				t.Errorf("KVMUsable = %v %q, want %v %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

func TestFindFirecracker(t *testing.T) {
	const fc = "/usr/local/bin/firecracker"
	tests := []struct {
		name        string
		bin         string
		bins        map[string]string
		out         string
		wantPath    string
		wantVersion string
		wantErr     string // substring; "" means no error
	}{
		{name: "1.10 on PATH", bins: map[string]string{"firecracker": fc}, out: "Firecracker v1.10.1\n\nSupported snapshot data format versions: v5.0.0\n", wantPath: fc, wantVersion: "1.10.1"},
		{name: "exactly 1.8", bins: map[string]string{"firecracker": fc}, out: "Firecracker v1.8.0\n", wantPath: fc, wantVersion: "1.8.0"},
		{name: "2.0", bins: map[string]string{"firecracker": fc}, out: "Firecracker v2.0\n", wantPath: fc, wantVersion: "2.0"},
		{name: "1.7 too old", bins: map[string]string{"firecracker": fc}, out: "Firecracker v1.7.0\n", wantPath: fc, wantVersion: "1.7.0", wantErr: "firecracker 1.7.0 at /usr/local/bin/firecracker is too old: need 1.8 or newer"},
		{name: "0.25 too old", bins: map[string]string{"firecracker": fc}, out: "Firecracker v0.25.2\n", wantPath: fc, wantVersion: "0.25.2", wantErr: "too old"},
		{name: "garbage output", bins: map[string]string{"firecracker": fc}, out: "garbage\nmore", wantPath: fc, wantErr: `/usr/local/bin/firecracker --version: no version in "garbage"`},
		{name: "not installed", wantErr: "firecracker not found"},
		{name: "configured binary", bin: "/opt/fc", bins: map[string]string{"/opt/fc": "/opt/fc", "firecracker": fc}, out: "Firecracker v1.9.0", wantPath: "/opt/fc", wantVersion: "1.9.0"},
		{name: "configured binary missing", bin: "/opt/fc", bins: map[string]string{"firecracker": fc}, wantErr: "/opt/fc not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fake{bins: tt.bins, versions: map[string]string{}}
			for _, p := range tt.bins {
				h.versions[p] = tt.out
			}
			path, v, err := FindFirecracker(context.Background(), h.probes(), tt.bin)
			if path != tt.wantPath || v != tt.wantVersion {
				t.Errorf("FindFirecracker = %q %q, want %q %q", path, v, tt.wantPath, tt.wantVersion)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("FindFirecracker error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestFindQEMU(t *testing.T) {
	const q = "/usr/bin/qemu-system-x86_64"
	h := fake{
		bins:     map[string]string{"qemu-system-x86_64": q, "/opt/broken": "/opt/broken"},
		versions: map[string]string{q: "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u1)\nCopyright (c) 2003-2022 Fabrice Bellard\n"},
	}
	if path, v, err := FindQEMU(context.Background(), h.probes(), ""); path != q || v != "7.2.22" || err != nil {
		t.Errorf("FindQEMU = %q %q %v, want %q 7.2.22", path, v, err, q)
	}
	if _, _, err := FindQEMU(context.Background(), h.probes(), "/opt/qemu"); err == nil || err.Error() != "/opt/qemu not found" {
		t.Errorf("FindQEMU(/opt/qemu) error = %v", err)
	}
	if path, _, err := FindQEMU(context.Background(), h.probes(), "/opt/broken"); path != "/opt/broken" || err == nil || !strings.Contains(err.Error(), "exec format error") {
		t.Errorf("FindQEMU(/opt/broken) = %q, %v; want the path and the exec error", path, err)
	}
}

func TestFindTool(t *testing.T) {
	h := fake{bins: map[string]string{"ip": "/usr/bin/ip"}, sbin: []string{"mkfs.ext4"}}
	for _, tt := range []struct{ name, want, err string }{
		{"ip", "/usr/bin/ip", ""},
		{"mkfs.ext4", "/usr/sbin/mkfs.ext4", ""},
		{"notexec", "", "notexec not found"},
		{"adir", "", "adir not found"},
		{"nft", "", "nft not found"},
	} {
		got, err := FindTool(h.probes(), tt.name)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && err.Error() != tt.err {
			t.Errorf("FindTool(%s) = %q, %v; want %q, %q", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestVMHost(t *testing.T) {
	h := fake{
		cpuinfo:  cpuPVM,
		bins:     map[string]string{"firecracker": "/fc", "qemu-system-x86_64": "/q", "/old": "/old"},
		versions: map[string]string{"/fc": "Firecracker v1.10.1", "/q": "QEMU emulator version 8.2.0", "/old": "Firecracker v1.4.0"},
	}
	host := &VMHost{Probes: h.probes(), Memory: func() int { return 4096 }}
	if ok, why := host.KVMUsable(); ok || !strings.Contains(why, "neither vmx nor svm") {
		t.Errorf("KVMUsable = %v %q", ok, why)
	}
	if got := host.Firecracker(); got != "/fc" {
		t.Errorf("Firecracker = %q, want /fc", got)
	}
	if got := host.QEMU(); got != "/q" {
		t.Errorf("QEMU = %q, want /q", got)
	}
	if got := host.MemoryMiB(); got != 4096 {
		t.Errorf("MemoryMiB = %d", got)
	}
	old := &VMHost{Probes: h.probes(), FirecrackerBin: "/old", QEMUBin: "/nope"}
	if got := old.Firecracker(); got != "" {
		t.Errorf("Firecracker with a too-old binary = %q, want none", got)
	}
	if got := old.QEMU(); got != "" {
		t.Errorf("QEMU with a missing binary = %q, want none", got)
	}
	if got := old.MemoryMiB(); got != 0 {
		t.Errorf("MemoryMiB without a probe = %d, want 0", got)
	}
}

// TestReal checks the real probes' contracts on files the test makes:
// the errors KVMUsable classifies, the argv and output a failed command
// keeps, and free space on a real filesystem.
func TestReal(t *testing.T) {
	p := Real()
	dir := t.TempDir()
	rw := filepath.Join(dir, "rw")
	if err := os.WriteFile(rw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.OpenReadWrite(rw); err != nil {
		t.Errorf("OpenReadWrite(read-write file) = %v", err)
	}
	if err := p.OpenReadWrite(filepath.Join(dir, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenReadWrite(absent) = %v, want ErrNotExist", err)
	}
	if err := p.OpenReadWrite(dir); err == nil {
		t.Error("OpenReadWrite(directory) succeeded")
	}
	out, err := p.Output(context.Background(), "sh", "-c", "echo hello; echo oops >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "sh -c echo hello") || !strings.Contains(err.Error(), "oops") {
		t.Errorf("Output of a failing command: err %v, want argv and output in it", err)
	}
	if !strings.Contains(string(out), "hello") || !strings.Contains(string(out), "oops") {
		t.Errorf("Output = %q, want stdout and stderr", out)
	}
	if out, err := p.Output(context.Background(), "sh", "-c", "echo ok"); err != nil || string(out) != "ok\n" {
		t.Errorf("Output = %q, %v", out, err)
	}
	free, err := p.FreeBytes(dir)
	if err != nil || free == 0 {
		t.Errorf("FreeBytes(%s) = %d, %v", dir, free, err)
	}
	if _, err := p.FreeBytes(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "statfs") {
		t.Errorf("FreeBytes(absent) = %v, want a statfs error", err)
	}
	if p.Geteuid() != os.Geteuid() {
		t.Error("Geteuid is not the process's")
	}
}

func TestSubIDs(t *testing.T) {
	read := func(files map[string]string) Probes {
		return Probes{ReadFile: func(p string) ([]byte, error) {
			if b, ok := files[p]; ok {
				return []byte(b), nil
			}
			return nil, fs.ErrNotExist
		}}
	}
	for _, tc := range []struct {
		name     string
		sub, gid string
		ok       bool
		why      string
	}{
		{"by name", "dev:100000:65536\n", "dev:100000:65536\n", true, ""},
		{"by uid", "1000:100000:65536\n", "1000:100000:65536\n", true, ""},
		{"two ranges add up", "dev:1:30000\n# comment\n1000:50000:35536\n", "dev:1:65536", true, ""},
		{"someone else's", "alice:100000:65536\n", "alice:100000:65536\n", false, "/etc/subuid gives dev 0 ids"},
		{"gids short", "dev:100000:65536\n", "dev:100000:100\n", false, "/etc/subgid gives dev 100 ids"},
		{"garbage", "dev:x:y\ndev:1\n", "", false, "/etc/subuid gives dev 0 ids"},
	} {
		files := map[string]string{"/etc/subuid": tc.sub}
		if tc.gid != "" {
			files["/etc/subgid"] = tc.gid
		}
		ok, why := SubIDs(read(files), "dev", 1000)
		if ok != tc.ok || !strings.Contains(why, tc.why) {
			t.Errorf("%s: SubIDs = %v, %q; want %v, %q", tc.name, ok, why, tc.ok, tc.why)
		}
	}
}
