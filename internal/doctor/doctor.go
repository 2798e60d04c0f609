// Package doctor runs host preflight checks for banger (KVM, VMMs, image
// tools, networking tools, privilege, the sudo rule, disk, default image,
// VM defaults) and reports each as ok, warn or fail with a fix hint.
// bangerd runs them and answers `banger doctor` over the API; every host
// access goes through hostcap.Probes so the checks can be tested with
// table rows.
package doctor

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/hostcap"
	"banger/internal/layout"
	"banger/internal/units"
)

// Check and Report are the wire types the daemon answers with.
type (
	// Check is one line of the report.
	Check = api.DoctorCheck
	// Report is the result of Run.
	Report = api.DoctorReport
)

// Check outcomes, as on the wire.
const (
	StatusOK   = api.CheckOK
	StatusWarn = api.CheckWarn
	StatusFail = api.CheckFail
)

// Input is what the checks need besides the probes.
type Input struct {
	Config *config.Config
	Paths  config.Paths
	Host   config.HostInfo
	// DefaultImage reports the configured default image's state:
	// "present" (in the image store), "buildable" (banger has a recipe
	// for it) or "missing"; detail is shown to the user. Nil means the
	// state is unknown (the check warns).
	DefaultImage func(ctx context.Context) (state string, detail string)
	// BangerdPath, when set, lets the privilege check accept a sudoers
	// rule that only allows `bangerd priv` (checked with `sudo -n -l`).
	BangerdPath string
}

// Default image states reported by Input.DefaultImage.
const (
	ImagePresent   = "present"
	ImageBuildable = "buildable"
	ImageMissing   = "missing"
)

// Free-disk thresholds for the state directory.
const (
	diskWarnBytes = 10 << 30
	diskFailBytes = 2 << 30
)

// Run performs every check, in a fixed order.
func Run(ctx context.Context, p hostcap.Probes, in Input) Report {
	c := in.Config
	if c == nil {
		c = config.Default()
	}
	kvmOK, kvmReason := hostcap.KVMUsable(p)
	fcPath, fcVersion, fcErr := hostcap.FindFirecracker(ctx, p, c.FirecrackerBin)
	qemuPath, qemuVersion, qemuErr := hostcap.FindQEMU(ctx, p, c.QEMUBin)
	fcOK, qemuOK := fcErr == nil, qemuErr == nil
	fcStandIn := fcOK && hostcap.FirecrackerStandIn(ctx, p, c.FirecrackerBin) // boots under QEMU TCG, needs no KVM

	var checks []Check
	add := func(name string, s api.CheckStatus, detail, fix string) {
		checks = append(checks, Check{Name: name, Status: s, Detail: detail, Fix: fix})
	}

	// KVM.
	const kvmFix = "enable virtualization (VT-x/AMD-V) in the firmware, load kvm_intel or kvm_amd, and make /dev/kvm read-write for your user (kvm group)"
	switch {
	case kvmOK:
		add("kvm", StatusOK, kvmReason, "")
	case c.Accel == "kvm":
		add("kvm", StatusFail, kvmReason+"; config sets accel = \"kvm\"", kvmFix+`; or set accel = "auto" in `+configPath(c, in.Paths))
	case c.VMM == "firecracker" && fcStandIn:
		add("kvm", StatusWarn, "TCG only: "+kvmReason+"; config sets vmm = \"firecracker\", a stand-in that needs no KVM", "for a real Firecracker: "+kvmFix)
	case c.VMM == "firecracker":
		add("kvm", StatusFail, kvmReason+"; config sets vmm = \"firecracker\", which needs KVM", kvmFix+`; or set vmm = "auto" to use QEMU (TCG)`)
	case qemuOK:
		add("kvm", StatusWarn, "TCG only: "+kvmReason, "VMs run under QEMU software emulation (slower); for KVM: "+kvmFix)
	default:
		add("kvm", StatusFail, "TCG only: "+kvmReason+", and QEMU is not installed: no VMM can run", "install QEMU (apt install qemu-system-x86) or "+kvmFix+" and install Firecracker")
	}

	// Firecracker.
	const fcFix = "download firecracker 1.8 or newer from the Firecracker project's GitHub releases and put it on PATH, or set firecracker_bin"
	switch {
	case fcStandIn:
		add("firecracker", StatusOK, fmt.Sprintf("%s (%s): firecracker stand-in (no KVM needed)", fcVersion, fcPath), "")
	case fcOK && kvmOK:
		add("firecracker", StatusOK, fmt.Sprintf("%s (%s)", fcVersion, fcPath), "")
	case fcOK:
		add("firecracker", StatusOK, fmt.Sprintf("%s (%s); unused while KVM is not usable", fcVersion, fcPath), "")
	case c.VMM == "firecracker":
		add("firecracker", StatusFail, fcErr.Error()+`; config sets vmm = "firecracker"`, fcFix)
	case qemuOK:
		add("firecracker", StatusWarn, fcErr.Error()+"; QEMU is used instead", fcFix)
	default:
		add("firecracker", StatusFail, fcErr.Error()+", and QEMU is not installed either", fcFix)
	}

	checks = append(checks, jailerCheck(p, c, fcOK))

	// QEMU.
	const qemuFix = "apt install qemu-system-x86 (or your distribution's QEMU package), or set qemu_bin"
	switch {
	case qemuOK:
		add("qemu", StatusOK, fmt.Sprintf("%s (%s)", qemuVersion, qemuPath), "")
	case c.VMM == "qemu":
		add("qemu", StatusFail, qemuErr.Error()+`; config sets vmm = "qemu"`, qemuFix)
	case fcOK && kvmOK:
		add("qemu", StatusWarn, qemuErr.Error()+"; Firecracker is used instead", qemuFix)
	default:
		add("qemu", StatusFail, qemuErr.Error(), qemuFix)
	}

	// Image and disk tools.
	mmdebstrap, mmErr := hostcap.FindTool(p, "mmdebstrap")
	if mmErr == nil {
		add("mmdebstrap", StatusOK, mmdebstrap, "")
	} else {
		add("mmdebstrap", StatusWarn, "not found: the default image cannot be built here", "apt install mmdebstrap")
	}
	checks = append(checks, toolsCheck(p, "e2fsprogs", StatusFail, "apt install e2fsprogs", "mkfs.ext4", "resize2fs", "debugfs", "e2fsck"))
	checks = append(checks, toolsCheck(p, "ip/nft", StatusFail, "apt install iproute2 nftables", "ip", "nft"))
	checks = append(checks, containerCheck(p))

	checks = append(checks, privilegeCheck(ctx, p, in.BangerdPath))
	checks = append(checks, sudoRuleCheck(p, in.BangerdPath))
	checks = append(checks, tunCheck(p))
	checks = append(checks, diskCheck(p, in.Paths.StateDir))
	checks = append(checks, imageCheck(ctx, p, c, in, mmErr == nil))

	// VM defaults.
	r := config.ResolveVMDefaults(c, in.Host)
	add("vm defaults", StatusOK, fmt.Sprintf("%s; set [vm_defaults] in %s", r.Provenance(), configPath(c, in.Paths)), "")

	rep := Report{Checks: checks, OK: true}
	for _, ch := range checks {
		if ch.Status == StatusFail {
			rep.OK = false
		}
	}
	return rep
}

func configPath(c *config.Config, p config.Paths) string {
	if c.Path != "" {
		return c.Path
	}
	if p.ConfigFile != "" {
		return p.ConfigFile
	}
	return layout.ConfigFile
}

// toolsCheck requires every tool; missing ones get status missing.
func toolsCheck(p hostcap.Probes, name string, missing api.CheckStatus, fix string, tools ...string) Check {
	var absent []string
	for _, t := range tools {
		if _, err := hostcap.FindTool(p, t); err != nil {
			absent = append(absent, t)
		}
	}
	if len(absent) > 0 {
		return Check{Name: name, Status: missing, Detail: "missing: " + strings.Join(absent, ", "), Fix: fix}
	}
	return Check{Name: name, Status: StatusOK, Detail: strings.Join(tools, ", ")}
}

func containerCheck(p hostcap.Probes) Check {
	for _, t := range []string{"podman", "docker"} {
		if path, err := p.LookPath(t); err == nil {
			return Check{Name: "podman/docker", Status: StatusOK, Detail: path}
		}
	}
	return Check{Name: "podman/docker", Status: StatusWarn,
		Detail: "neither found: only needed for images built from a Dockerfile",
		Fix:    "apt install podman (or install docker)"}
}

func privilegeCheck(ctx context.Context, p hostcap.Probes, bangerd string) Check {
	const name = "privilege"
	if p.Geteuid() == 0 {
		return Check{Name: name, Status: StatusOK, Detail: "running as root"}
	}
	fix := "allow passwordless sudo for bangerd's privileged helper, e.g. in /etc/sudoers.d/banger: `<user> ALL=(root) NOPASSWD: " + sudoersPath(p, bangerd) + " priv *`"
	sudo, err := p.LookPath("sudo")
	if err != nil {
		return Check{Name: name, Status: StatusFail, Detail: "not root and sudo is not installed", Fix: "install sudo; then " + fix}
	}
	ctx, cancel := context.WithTimeout(ctx, hostcap.ProbeTimeout)
	defer cancel()
	if _, err := p.Output(ctx, sudo, "-n", "true"); err == nil {
		return Check{Name: name, Status: StatusOK, Detail: "sudo -n works"}
	}
	if bangerd != "" {
		// With an operation after "priv": the README's rule ends in
		// "priv *", which sudo does not match against a bare "priv".
		if _, err := p.Output(ctx, sudo, "-n", "-l", bangerd, "priv", "ensure-bridge"); err == nil {
			return Check{Name: name, Status: StatusOK, Detail: "sudo -n may run " + bangerd + " priv"}
		}
	}
	return Check{Name: name, Status: StatusFail, Detail: "not root and `sudo -n` is not allowed (networking and disks need privilege)", Fix: fix}
}

// diskCheck measures free space on the state dir's filesystem (its
// closest existing ancestor, before the first run creates it).
func diskCheck(p hostcap.Probes, dir string) Check {
	const name = "disk"
	if dir == "" {
		return Check{Name: name, Status: StatusWarn, Detail: "state directory unknown"}
	}
	probe := dir
	for {
		if _, err := p.Stat(probe); err == nil {
			break
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	free, err := p.FreeBytes(probe)
	if err != nil {
		return Check{Name: name, Status: StatusWarn, Detail: fmt.Sprintf("cannot measure free space in %s: %v", dir, err)}
	}
	detail := fmt.Sprintf("%s free in %s", units.Bytes(int64(min(free, math.MaxInt64))), dir)
	fix := "free space there, or point BANGER_STATE_DIR at a larger filesystem"
	switch {
	case free < diskFailBytes:
		return Check{Name: name, Status: StatusFail, Detail: detail + " (need at least 2 GiB)", Fix: fix}
	case free < diskWarnBytes:
		return Check{Name: name, Status: StatusWarn, Detail: detail + " (under 10 GiB: images and VM disks may not fit)", Fix: fix}
	}
	return Check{Name: name, Status: StatusOK, Detail: detail}
}

func imageCheck(ctx context.Context, p hostcap.Probes, c *config.Config, in Input, mmdebstrap bool) Check {
	name := "default image"
	img := c.DefaultImage
	if in.DefaultImage == nil {
		return Check{Name: name, Status: StatusWarn, Detail: img + ": state unknown"}
	}
	state, detail := in.DefaultImage(ctx)
	suffix := ""
	if detail != "" {
		suffix = ": " + detail
	}
	switch state {
	case ImagePresent:
		return Check{Name: name, Status: StatusOK, Detail: img + " present" + suffix}
	case ImageBuildable:
		if mmdebstrap {
			// As a normal user mmdebstrap builds in a user namespace,
			// which needs subordinate ids.
			if p.Geteuid() != 0 {
				user, uid := hostcap.CurrentUser(p)
				if ok, why := hostcap.SubIDs(p, user, uid); !ok {
					return Check{Name: name, Status: StatusFail,
						Detail: img + " not built, and cannot be built as " + user + ": " + why + suffix,
						Fix:    hostcap.SubIDsFix(user) + "; or pull a prebuilt image and set default_image"}
				}
			}
			return Check{Name: name, Status: StatusOK, Detail: img + " not built yet; built on first use" + suffix}
		}
		return Check{Name: name, Status: StatusFail, Detail: img + " not built and mmdebstrap is missing" + suffix,
			Fix: "apt install mmdebstrap, or pull a prebuilt image and set default_image"}
	case ImageMissing:
		return Check{Name: name, Status: StatusFail, Detail: img + " missing and no recipe builds it" + suffix,
			Fix: "pull or import an image and set default_image in " + configPath(c, in.Paths)}
	}
	return Check{Name: name, Status: StatusWarn, Detail: fmt.Sprintf("%s: unknown state %q%s", img, state, suffix)}
}
