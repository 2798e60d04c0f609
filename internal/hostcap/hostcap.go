// Package hostcap answers what this host can run: is KVM usable, where
// the VMMs are and which versions they are, where a tool is. It is the
// daemon's one view of host capabilities: bangerd chooses a VMM with it
// and the doctor checks are built on it. Every host access goes through
// Probes, so callers and tests can feed table rows instead of a machine.
package hostcap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Probes are the only view of the host this package and its callers take.
// Real reads the running machine; tests fill the fields with table rows.
type Probes struct {
	ReadFile      func(path string) ([]byte, error)
	OpenReadWrite func(path string) error // opens path O_RDWR and closes it
	LookPath      func(file string) (string, error)
	Output        func(ctx context.Context, name string, args ...string) ([]byte, error) // stdout and stderr combined
	Geteuid       func() int
	FreeBytes     func(path string) (uint64, error) // bytes available to unprivileged users on path's filesystem
	Stat          func(path string) (os.FileInfo, error)
	Owner         func(path string) (PathOwner, error) // lstat owner and mode, access(W_OK) for this user (owner.go)
	// Username names the effective user (for /etc/subuid); nil or an
	// error means only the uid is matched.
	Username func() (string, error)
}

// Real returns probes backed by the running host.
func Real() Probes {
	return Probes{
		ReadFile: os.ReadFile,
		OpenReadWrite: func(path string) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			return f.Close()
		},
		LookPath: exec.LookPath,
		Output: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
			if err != nil {
				return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
			return out, nil
		},
		Geteuid: os.Geteuid,
		Username: func() (string, error) {
			u, err := user.Current()
			if err != nil {
				return "", err
			}
			return u.Username, nil
		},
		FreeBytes: func(path string) (uint64, error) {
			var st unix.Statfs_t
			if err := unix.Statfs(path, &st); err != nil {
				return 0, fmt.Errorf("statfs %s: %w", path, err)
			}
			return st.Bavail * uint64(st.Bsize), nil
		},
		Stat:  os.Stat,
		Owner: lstatOwner,
	}
}

// Default binary names, used when the config names none.
const (
	FirecrackerBin = "firecracker"
	QEMUBin        = "qemu-system-x86_64"
)

// Minimum Firecracker version banger drives: 1.8 passes ACPI tables, which
// Debian's kernel needs to find virtio-mmio devices.
const (
	MinFirecrackerMajor = 1
	MinFirecrackerMinor = 8
)

// ProbeTimeout bounds each external command a probe runs.
const ProbeTimeout = 10 * time.Second

// KVMUsable reports whether VMs can use hardware virtualization: /dev/kvm
// opens read-write and /proc/cpuinfo advertises vmx or svm. A paravirtual
// KVM (PVM) has /dev/kvm but neither flag, and stock kernels do not boot
// under it. reason says why in either case.
func KVMUsable(p Probes) (ok bool, reason string) {
	if err := p.OpenReadWrite("/dev/kvm"); err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, "/dev/kvm does not exist"
		case errors.Is(err, fs.ErrPermission):
			return false, "/dev/kvm is not read-write for this user"
		default:
			return false, fmt.Sprintf("cannot open /dev/kvm: %v", err)
		}
	}
	data, err := p.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false, fmt.Sprintf("cannot read /proc/cpuinfo: %v", err)
	}
	switch flag := virtFlag(data); flag {
	case "":
		return false, "/dev/kvm is present but the CPU advertises neither vmx nor svm (paravirtual KVM such as PVM)"
	default:
		return true, fmt.Sprintf("/dev/kvm read-write, CPU has %s", flag)
	}
}

// virtFlag returns "vmx" or "svm" when a flags line of cpuinfo has it.
func virtFlag(cpuinfo []byte) string {
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			if f == "vmx" || f == "svm" {
				return f
			}
		}
	}
	return ""
}

// FindFirecracker locates firecracker (bin, else FirecrackerBin on PATH),
// runs `firecracker --version` and requires version 1.8 or newer. path
// and version are returned as far as they were found, also with an error.
func FindFirecracker(ctx context.Context, p Probes, bin string) (path, version string, err error) {
	if bin == "" {
		bin = FirecrackerBin
	}
	path, version, err = findVersioned(ctx, p, bin)
	if err != nil {
		return path, version, err
	}
	maj, mnr, ok := parseVersion(version)
	if !ok {
		return path, version, fmt.Errorf("firecracker at %s: cannot parse version from %q", path, version)
	}
	if maj < MinFirecrackerMajor || maj == MinFirecrackerMajor && mnr < MinFirecrackerMinor {
		return path, version, fmt.Errorf("firecracker %s at %s is too old: need %d.%d or newer", version, path, MinFirecrackerMajor, MinFirecrackerMinor)
	}
	return path, version, nil
}

// FirecrackerStandInLine is the line a Firecracker stand-in (banger's
// fakefc) prints after its version: it boots guests under QEMU TCG, so
// unlike a real Firecracker it needs no KVM.
const FirecrackerStandInLine = "stand-in: boots under QEMU TCG, needs no KVM"

// IsFirecrackerStandIn reports whether `firecracker --version` output
// comes from a stand-in (a line equal to FirecrackerStandInLine).
func IsFirecrackerStandIn(versionOutput []byte) bool {
	for _, line := range strings.Split(string(versionOutput), "\n") {
		if strings.TrimSpace(line) == FirecrackerStandInLine {
			return true
		}
	}
	return false
}

// FirecrackerStandIn reports whether the firecracker binary bin (else
// FirecrackerBin on PATH) is a stand-in that needs no KVM. Any failure to
// find or run it means false: a real Firecracker is assumed.
func FirecrackerStandIn(ctx context.Context, p Probes, bin string) bool {
	if bin == "" {
		bin = FirecrackerBin
	}
	path, err := p.LookPath(bin)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	out, err := p.Output(ctx, path, "--version")
	return err == nil && IsFirecrackerStandIn(out)
}

// FindQEMU locates qemu-system-x86_64 (bin, else QEMUBin on PATH) and
// reads its version.
func FindQEMU(ctx context.Context, p Probes, bin string) (path, version string, err error) {
	if bin == "" {
		bin = QEMUBin
	}
	return findVersioned(ctx, p, bin)
}

var versionRe = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// findVersioned looks bin up and returns its path and "X.Y.Z" version from
// `bin --version`.
func findVersioned(ctx context.Context, p Probes, bin string) (string, string, error) {
	path, err := p.LookPath(bin)
	if err != nil {
		return "", "", fmt.Errorf("%s not found", bin)
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	out, err := p.Output(ctx, path, "--version")
	if err != nil {
		return path, "", fmt.Errorf("%s --version: %w", path, err)
	}
	v := versionRe.FindString(string(out))
	if v == "" {
		return path, "", fmt.Errorf("%s --version: no version in %q", path, firstLine(out))
	}
	return path, v, nil
}

func parseVersion(v string) (major, minor int, ok bool) {
	m := versionRe.FindStringSubmatch(v)
	if m == nil {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, true
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// FindTool looks name up on PATH and then in the sbin directories, which
// are often missing from an unprivileged user's PATH.
func FindTool(p Probes, name string) (string, error) {
	if path, err := p.LookPath(name); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		path := filepath.Join(dir, name)
		if fi, err := p.Stat(path); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// VMHost answers the VM lifecycle's questions about the host (is KVM
// usable, where are the VMMs, how much memory) from Probes and the
// configured binaries. Each call probes afresh, so a newly installed
// binary is picked up without a daemon restart.
type VMHost struct {
	Probes         Probes
	FirecrackerBin string     // "" means FirecrackerBin on PATH
	QEMUBin        string     // "" means QEMUBin on PATH
	Memory         func() int // host RAM in MiB; nil or 0 means unknown
}

// KVMUsable reports whether /dev/kvm works for stock kernels, and why not.
func (h *VMHost) KVMUsable() (bool, string) { return KVMUsable(h.Probes) }

// Firecracker returns a usable firecracker's path, or "" when there is none.
func (h *VMHost) Firecracker() string {
	path, _, err := FindFirecracker(context.Background(), h.Probes, h.FirecrackerBin)
	if err != nil {
		return ""
	}
	return path
}

// FirecrackerStandIn reports whether the firecracker binary is a stand-in
// that boots guests under QEMU TCG and so needs no KVM.
func (h *VMHost) FirecrackerStandIn() bool {
	return FirecrackerStandIn(context.Background(), h.Probes, h.FirecrackerBin)
}

// QEMU returns qemu-system-x86_64's path, or "" when it is absent.
func (h *VMHost) QEMU() string {
	path, _, err := FindQEMU(context.Background(), h.Probes, h.QEMUBin)
	if err != nil {
		return ""
	}
	return path
}

// MemoryMiB is the host's RAM, the ceiling for one VM's memory (0 when
// unknown).
func (h *VMHost) MemoryMiB() int {
	if h.Memory == nil {
		return 0
	}
	return h.Memory()
}

// MinSubIDs is how many subordinate uids and gids mmdebstrap's unshare
// mode needs to map a Debian root filesystem (ids 0 to 65535).
const MinSubIDs = 65536

// CurrentUser returns the effective user's name (its uid when the name
// cannot be found) and uid.
func CurrentUser(p Probes) (string, int) {
	uid := p.Geteuid()
	if p.Username != nil {
		if n, err := p.Username(); err == nil && n != "" {
			return n, uid
		}
	}
	return strconv.Itoa(uid), uid
}

// SubIDs reports whether the user named user (uid uid) has at least
// MinSubIDs subordinate uids in /etc/subuid and gids in /etc/subgid, which
// a build of the default image as that user needs (root needs none). The
// detail says what is missing.
func SubIDs(p Probes, user string, uid int) (ok bool, detail string) {
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, err := p.ReadFile(f)
		if err != nil {
			return false, fmt.Sprintf("%s: %v", f, err)
		}
		if n := subIDCount(b, user, uid); n < MinSubIDs {
			return false, fmt.Sprintf("%s gives %s %d ids, %d needed", f, user, n, MinSubIDs)
		}
	}
	return true, ""
}

// subIDCount sums the ids the lines of a subuid/subgid file give to user
// (by name or by uid).
func subIDCount(b []byte, user string, uid int) int64 {
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 || (f[0] != user && f[0] != strconv.Itoa(uid)) {
			continue
		}
		if c, err := strconv.ParseInt(f[2], 10, 64); err == nil && c > 0 {
			n += c
		}
	}
	return n
}

// SubIDsFix is the command that gives user the subordinate ids an image
// build needs.
func SubIDsFix(user string) string {
	return fmt.Sprintf("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s, then restart bangerd (banger daemon stop)", user)
}
