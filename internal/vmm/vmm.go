// Package vmm defines how banger drives a virtual machine monitor: the
// Spec of a VM to boot, the Handles the operating system hands back (PID,
// sockets, tap), the Driver interface implemented by vmm/firecracker and
// vmm/qemu, and the single liveness check used by the daemon's reconcile.
//
// Handles never go into SQLite: they live in a HandleCache in memory and in
// handles.json in the VM directory, so a restarted daemon can re-adopt VMM
// processes that outlived it.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Driver names, as stored in Handles.VMM and accepted by Select.
const (
	Firecracker = "firecracker"
	QEMU        = "qemu"
	Auto        = "auto"
)

// Agent transports, as stored in Handles.AgentTransport.
const (
	TransportVsock  = "vsock"
	TransportSerial = "serial"
)

// Accelerators for the QEMU driver, as set in Spec.Accel.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Drive is one block device given to the guest. The guest finds its
// filesystems by label, so only the order of Spec.Drives is conventional.
type Drive struct {
	ID       string
	Path     string
	ReadOnly bool
}

// Spec is everything a driver needs to boot one VM. The caller resolves
// every choice (accelerator, tap, CID) before calling Start.
type Spec struct {
	VMID      string
	Name      string
	VCPU      int
	MemoryMiB int
	// Vmlinux is the uncompressed ELF kernel (Firecracker); BzImage the
	// compressed kernel (QEMU).
	Vmlinux string
	BzImage string
	Initrd  string
	// Cmdline is banger's kernel command line (see the guest contract);
	// drivers append only what they must.
	Cmdline string
	// Drives in order: rootfs (read-only), overlay, work, config (read-only).
	Drives []Drive
	// Tap is the host tap device; empty means no network interface.
	Tap string
	MAC string
	// CID is the guest's vsock context id (>= 3).
	CID uint32
	// Dir is the VM directory holding sockets and logs.
	Dir string
	// Accel is the QEMU accelerator, AccelKVM or AccelTCG.
	Accel string
	// RestoreDir, when set, names a directory holding state a Snapshotter
	// of the same driver saved (see SavedState): Start then loads it
	// instead of booting the kernel, and returns once the guest runs
	// again. The Spec must describe the same machine (shape, drives,
	// MAC, CID) as the one that was saved.
	RestoreDir string
	// RestoreKernel is, with RestoreDir, the SavedState.Kernel of that
	// state: the driver loads the same kernel file it was saved with.
	RestoreKernel string
	// OnSpawn, when set, is called with the handles (PID and start time
	// filled in) the moment the VMM process exists, before the driver waits
	// for it to be ready, so the caller can record them durably: a daemon
	// killed during that wait must still find the process afterwards. An
	// error ends the VMM and fails Start.
	OnSpawn func(Handles) error
}

// Validate reports the first missing or impossible field of s that every
// driver needs.
func (s Spec) Validate() error {
	switch {
	case s.VMID == "":
		return errors.New("spec: vm id is empty")
	case s.VCPU < 1:
		return fmt.Errorf("spec %s: vcpu %d < 1", s.VMID, s.VCPU)
	case s.MemoryMiB < 1:
		return fmt.Errorf("spec %s: memory %d MiB < 1", s.VMID, s.MemoryMiB)
	case s.Dir == "":
		return fmt.Errorf("spec %s: vm dir is empty", s.VMID)
	case s.Tap != "" && s.MAC == "":
		return fmt.Errorf("spec %s: tap %s without a mac address", s.VMID, s.Tap)
	}
	for i, d := range s.Drives {
		if d.ID == "" || d.Path == "" {
			return fmt.Errorf("spec %s: drive %d needs an id and a path", s.VMID, i)
		}
	}
	return nil
}

// Handles is what the operating system handed out for one running VM. It is
// stored as JSON in handles.json, never in SQLite.
type Handles struct {
	VMM string `json:"vmm"`
	PID int    `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks since boot); it
	// tells our VMM apart from a later process that reused the PID.
	StartTime      uint64 `json:"start_time"`
	APISocket      string `json:"api_socket,omitempty"`
	VsockSocket    string `json:"vsock_socket,omitempty"`
	SerialSocket   string `json:"serial_socket,omitempty"`
	QMPSocket      string `json:"qmp_socket,omitempty"`
	ConsoleLog     string `json:"console_log,omitempty"`
	VMMLog         string `json:"vmm_log,omitempty"`
	Tap            string `json:"tap,omitempty"`
	AgentTransport string `json:"agent_transport,omitempty"`
	// Accel is the QEMU accelerator the VMM runs with (empty for
	// Firecracker, which is always KVM); saved state loads only under the
	// same one.
	Accel string `json:"accel,omitempty"`
	// Paused is set while the guest's vCPUs are stopped (vm pause, or a
	// suspend in progress), so a restarted daemon knows it too.
	Paused bool `json:"paused,omitempty"`
	// Jail is the host path of the chroot a jailed VMM runs in
	// (Firecracker under its jailer: <base>/<exec name>/<jail id>/root);
	// the sockets above are host paths inside it, and the VMM's command
	// line names them relative to it.
	Jail string `json:"jail,omitempty"`
}

// ControlSocket is the socket that identifies this VM's VMM process on its
// command line: the Firecracker API socket or the QEMU QMP socket, as the
// VMM names it (inside its jail, for a jailed one).
func (h Handles) ControlSocket() string {
	sock := h.QMPSocket
	if h.APISocket != "" {
		sock = h.APISocket
	}
	if h.Jail != "" {
		rel, ok := strings.CutPrefix(sock, strings.TrimSuffix(h.Jail, "/")+"/")
		if !ok {
			return ""
		}
		return "/" + rel
	}
	return sock
}

// JailID is the --id a jailed VMM was started with (the jail directory's
// parent), or "" when it is not jailed.
func (h Handles) JailID() string {
	if h.Jail == "" {
		return ""
	}
	return filepath.Base(filepath.Dir(h.Jail))
}

// Cleaner is implemented by drivers that leave host state beside a VMM
// process (Firecracker's jail): Cleanup removes it once the process is
// gone. The daemon calls it at every teardown.
type Cleaner interface {
	Cleanup(h Handles) error
}

// Driver boots and ends VMM processes. Implementations keep every
// VMM-specific call inside their own package.
type Driver interface {
	// Name returns the driver name (Firecracker or QEMU).
	Name() string
	// Start boots the VM as a detached process (own session, stdio to
	// files) that outlives the daemon; it returns once the process runs and
	// the VMM accepted the configuration. On error nothing is left running.
	Start(ctx context.Context, s Spec) (Handles, error)
	// Stop asks the guest to shut down and kills the VMM after timeout, then
	// waits for the process to exit. It is idempotent: nil when the VMM is
	// already gone.
	Stop(ctx context.Context, h Handles, timeout time.Duration) error
	// Kill ends the VMM at once and waits for it to exit; idempotent.
	Kill(ctx context.Context, h Handles) error
}

// MaxSocketPath is the longest unix socket path the kernel accepts
// (sun_path is 108 bytes including the terminating NUL).
const MaxSocketPath = 107

// CheckSocketPath returns an error naming path when it is too long to bind
// as a unix socket.
func CheckSocketPath(path string) error {
	if len(path) > MaxSocketPath {
		return fmt.Errorf("unix socket path %s is %d bytes, longer than the %d-byte limit: use a shorter state directory", path, len(path), MaxSocketPath)
	}
	return nil
}

// Select picks the driver for want (Auto, Firecracker or QEMU) given what
// the host offers. Auto prefers Firecracker when its binary is present and
// KVM is usable, and falls back to QEMU. Errors name what is missing.
func Select(want string, fcAvailable, kvmUsable, qemuAvailable bool) (string, error) {
	switch want {
	case Firecracker:
		var missing []error
		if !fcAvailable {
			missing = append(missing, errors.New("no firecracker binary (set firecracker_bin or put firecracker on PATH)"))
		}
		if !kvmUsable {
			missing = append(missing, errors.New("KVM is not usable (/dev/kvm must open read-write and the CPU must advertise vmx or svm)"))
		}
		if len(missing) > 0 {
			return "", fmt.Errorf("select vmm firecracker: %w", errors.Join(missing...))
		}
		return Firecracker, nil
	case QEMU:
		if !qemuAvailable {
			return "", errors.New("select vmm qemu: qemu-system-x86_64 not found on PATH (install qemu-system-x86)")
		}
		return QEMU, nil
	case Auto, "":
		if fcAvailable && kvmUsable {
			return Firecracker, nil
		}
		if qemuAvailable {
			return QEMU, nil
		}
		reason := "no firecracker binary"
		if fcAvailable {
			reason = "firecracker present but KVM is not usable"
		}
		return "", fmt.Errorf("select vmm auto: %s, and qemu-system-x86_64 not found on PATH (install qemu-system-x86)", reason)
	default:
		return "", fmt.Errorf("select vmm: unknown vmm %q (want auto, firecracker or qemu)", want)
	}
}

// SelectStandIn is Select for a host whose firecracker binary may be a
// stand-in (fcStandIn) that boots its guests under QEMU TCG: asked for
// by name, it is chosen without KVM; auto never picks it over QEMU, as
// it is a test double, not a faster VMM.
func SelectStandIn(want string, fcAvailable, fcStandIn, kvmUsable, qemuAvailable bool) (string, error) {
	if fcAvailable && fcStandIn {
		if want == Firecracker {
			return Firecracker, nil
		}
		fcAvailable = false
	}
	return Select(want, fcAvailable, kvmUsable, qemuAvailable)
}

// Snapshotter is implemented by drivers that can freeze a running VM in
// memory, save its memory and device state to files and boot from them
// again. Every method works on a VM the driver started.
type Snapshotter interface {
	// Pause stops the guest's vCPUs; the VMM process and its memory stay.
	Pause(ctx context.Context, h Handles) error
	// Resume lets a paused guest run again.
	Resume(ctx context.Context, h Handles) error
	// Save writes the state of the (running or paused) VM into dir, which
	// exists and is empty, and returns what it wrote. The guest is paused
	// first and stays paused; the caller ends the VMM (or resumes it) after.
	// On error the files written so far are removed and the guest stays
	// paused.
	Save(ctx context.Context, h Handles, dir string) (SavedState, error)
}

// Relocator is implemented by Snapshotters whose saved state can be
// restored into another VM (its own disks, tap and sockets), which warm
// templates, named snapshots and forks need. Relocatable reports nil when
// the state of h, once saved, would restore elsewhere, else why not; h is
// a running VM, or the zero Handles for a VM the driver would start now.
type Relocator interface {
	Relocatable(ctx context.Context, h Handles) error
}

// SavedState describes the files a Snapshotter wrote and the VMM that can
// load them. A VMM refuses state written by another build or for another
// machine shape, so callers compare Binary and Version (and the Spec's
// shape) before restoring and fall back to a cold boot otherwise.
type SavedState struct {
	// VMM is the driver name (Firecracker or QEMU).
	VMM string `json:"vmm"`
	// Version is the VMM's version string as the driver reports it.
	Version string `json:"version"`
	// Files are the names (inside the state dir) the driver wrote, each
	// with its size, so a truncated copy is refused before load.
	Files []StateFile `json:"files"`
	// Kernel is the base name of the kernel file the guest booted from,
	// for drivers whose state depends on it (QEMU: the option ROM that
	// entered the kernel is part of the state). Empty in state saved
	// before it was recorded, which QEMU had booted from the bzImage.
	Kernel string `json:"kernel,omitempty"`
}

// StateFile is one file of a SavedState.
type StateFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// AgentQuiescer is implemented by drivers whose agent channel is one
// byte stream shared by successive host connections (QEMU's virtio-serial
// port): hangUp closes the host's end (reporting whether a live connection
// was closed), and QuiesceAgent returns once the
// guest has ended the session of that connection, so that freezing the guest (pause,
// save) cannot capture a session the next host connection would then
// collide with. Channels with a connection per stream (vsock) need only
// the hang-up.
type AgentQuiescer interface {
	QuiesceAgent(ctx context.Context, h Handles, hangUp func() bool, timeout time.Duration) error
}

// Versioner reports the version of the VMM binary a driver would start,
// in the form SavedState.Version records, so saved state is checked
// against the VMM that would load it before anything is started.
type Versioner interface {
	Version(ctx context.Context) (string, error)
}
