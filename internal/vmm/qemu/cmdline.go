// Package qemu drives QEMU's microvm machine as a banger VMM: the command
// line is computed as data by Cmdline (golden-tested), the process runs
// detached, and QMP carries the readiness check and the clean shutdown.
package qemu

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/guestcontract"
	"banger/internal/layout"
	"banger/internal/vmm"
)

// DefaultBinary is the QEMU system emulator banger runs. Debian's
// qemu-system-x86_64-microvm is KVM-only, so the full binary is used.
const DefaultBinary = "qemu-system-x86_64"

// Options are the host facts Cmdline needs besides the Spec.
type Options struct {
	// Binary is argv[0]; DefaultBinary when empty.
	Binary string
	// HostKHz is the host TSC frequency in kHz, passed to the guest as
	// tsc_early_khz under TCG (without it the kernel often hangs
	// calibrating the TSC). Zero omits it.
	HostKHz int
	// Kernel is the file -kernel loads (see bootKernel); the spec's
	// BzImage when empty.
	Kernel string
}

// Paths of the files QEMU creates for s, all inside s.Dir.
func qmpPath(s vmm.Spec) string     { return filepath.Join(s.Dir, layout.QMPSocketFile) }
func agentPath(s vmm.Spec) string   { return filepath.Join(s.Dir, layout.AgentSocketFile) }
func consolePath(s vmm.Spec) string { return filepath.Join(s.Dir, layout.ConsoleLogFile) }
func pidPath(s vmm.Spec) string     { return filepath.Join(s.Dir, layout.PIDFile) }

// escape doubles commas, QEMU's escape inside option values.
func escape(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// KernelCmdline is s.Cmdline plus what QEMU needs appended: under TCG,
// tsc_early_khz=<host kHz> and tsc=reliable.
//
// Under TCG the guest's TSC is the host's (plus an offset QEMU keeps
// across a save and restore), one counter for every vCPU, but the
// kernel's synchronisation check, run while TCG translates its first
// code, sees warps, marks the TSC unstable and falls back to the jiffies
// clocksource. Jiffies lose every timer tick a busy host delays: a
// cold-booted guest measured 0.8 s behind after 10 s of boot, and a fork
// copy 3-5 s behind under the load of three guests on two cores.
// tsc=reliable keeps the TSC as the clocksource.
func KernelCmdline(s vmm.Spec, o Options) string {
	c := s.Cmdline
	if s.Accel != vmm.AccelKVM && o.HostKHz > 0 {
		c = strings.TrimSpace(c + " tsc_early_khz=" + strconv.Itoa(o.HostKHz) + " tsc=reliable")
	}
	return c
}

// Cmdline returns the full argv that boots s. It is a pure function of its
// inputs. Under TCG the machine keeps the PIT, PIC and RTC (the kernel hangs
// calibrating its clock without them); under KVM they go, with -cpu host.
func Cmdline(s vmm.Spec, o Options) []string {
	bin := o.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	args := []string{bin, "-name", "guest=" + escape(nameOf(s)) + ",debug-threads=on"}
	if s.Accel == vmm.AccelKVM {
		args = append(args,
			"-M", "microvm,acpi=on,pit=off,pic=off,rtc=on",
			"-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args,
			"-M", "microvm,acpi=on,pit=on,pic=on,rtc=on",
			"-accel", "tcg,thread=multi,tb-size="+strconv.Itoa(TBSizeMiB), "-cpu", "max")
	}
	args = append(args,
		"-m", strconv.Itoa(s.MemoryMiB),
		"-smp", strconv.Itoa(s.VCPU),
		"-nodefaults", "-no-user-config", "-nographic", "-display", "none",
		// append=on keeps earlier boots in the log across restarts.
		"-chardev", "file,id=console,path="+escape(consolePath(s))+",append=on",
		"-serial", "chardev:console",
		"-kernel", cmp.Or(o.Kernel, s.BzImage),
	)
	if s.Initrd != "" {
		args = append(args, "-initrd", s.Initrd)
	}
	args = append(args, "-append", KernelCmdline(s, o))
	for _, d := range s.Drives {
		drive := "id=" + escape(d.ID) + ",file=" + escape(d.Path) + ",format=raw,if=none"
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", "virtio-blk-device,drive="+escape(d.ID))
	}
	if s.Tap != "" {
		args = append(args,
			"-netdev", "tap,id=net0,ifname="+escape(s.Tap)+",script=no,downscript=no",
			"-device", "virtio-net-device,netdev=net0,mac="+s.MAC)
	}
	args = append(args,
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+escape(agentPath(s))+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,id="+agentPortID+",name="+guestcontract.AgentSerialPort)
	args = append(args,
		"-qmp", "unix:"+escape(qmpPath(s))+",server=on,wait=off",
		"-pidfile", pidPath(s),
		"-no-reboot",
		// seccomp: the guest drives QEMU's device emulation, so a QEMU
		// bug must not become a host process with free syscalls. Deny
		// obsolete calls, set*id, fork/exec and scheduler/affinity changes.
		"-sandbox", Sandbox,
	)
	return args
}

// agentPortID is the QEMU device id of the agent's virtio-serial port;
// QEMU names it in VSERPORT_CHANGE events (see QuiesceAgent).
const agentPortID = "agentport"

// TBSizeMiB is the TCG translation cache size. QEMU's default (1 GiB in
// system mode) is most of a TCG guest's host memory once booted (906 MB
// RSS for an idle default-image guest); a guest rarely has more than a
// few hundred MiB of hot code, and a full cache is flushed and refilled.
const TBSizeMiB = 256

// Sandbox is the value of QEMU's -sandbox option: the seccomp filter every
// banger VMM runs under. spawn=deny also forbids `migrate exec:`, so state
// saves go through file descriptors passed over QMP instead.
const Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

func nameOf(s vmm.Spec) string {
	if s.Name != "" {
		return s.Name
	}
	return s.VMID
}

// ParseCPUInfoKHz returns the first "cpu MHz" of a /proc/cpuinfo listing,
// in kHz.
func ParseCPUInfoKHz(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("parse cpu MHz %q: %w", v, err)
		}
		return int(mhz * 1000), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read cpuinfo: %w", err)
	}
	return 0, fmt.Errorf("no cpu MHz line in cpuinfo")
}
