package doctor

import (
	"errors"
	"fmt"

	"banger/internal/config"
	"banger/internal/hostcap"
)

// jailerCheck says whether Firecracker runs under its jailer: only a root
// bangerd uses it, and without it a root Firecracker is confined by its
// seccomp filter alone.
func jailerCheck(p hostcap.Probes, c *config.Config, fcOK bool) Check {
	const name = "jailer"
	const fix = "install jailer from the same Firecracker release as firecracker (on PATH), or set jailer_bin"
	switch {
	case !fcOK:
		return Check{Name: name, Status: StatusOK, Detail: "not needed: Firecracker is not used"}
	case p.Geteuid() != 0:
		return Check{Name: name, Status: StatusOK, Detail: "not used: bangerd runs as you, so Firecracker does too (seccomp on)"}
	}
	path, err := hostcap.FindJailer(p, c.JailerBin)
	uid, gid := c.JailerIDs()
	switch {
	case errors.Is(err, hostcap.ErrJailerOff):
		return Check{Name: name, Status: StatusWarn, Detail: `turned off (jailer_bin = "none"): Firecracker runs as root, confined by seccomp only`, Fix: `remove jailer_bin = "none" from the config`}
	case err != nil && c.JailerBin != "":
		return Check{Name: name, Status: StatusFail, Detail: err.Error() + "; config sets jailer_bin (bangerd will not start)", Fix: fix}
	case err != nil:
		return Check{Name: name, Status: StatusWarn, Detail: err.Error() + ": Firecracker runs as root, confined by seccomp only", Fix: fix}
	}
	return Check{Name: name, Status: StatusOK, Detail: fmt.Sprintf("%s: Firecracker runs jailed as %d:%d", path, uid, gid)}
}
