package doctor

import (
	"banger/internal/hostcap"
)

// tunDevice is the device a VMM opens to attach to its tap.
const tunDevice = "/dev/net/tun"

// tunCheck: a VMM running as a user other than root attaches to its tap
// through /dev/net/tun, which it must open read-write. Distributions make
// it 0666 through udev; hosts without udev often leave it 0600. The tap
// itself stays owned by the user, so opening the device gives no access
// to another user's taps.
func tunCheck(p hostcap.Probes) Check {
	const name = "tun"
	if p.Geteuid() == 0 {
		return Check{Name: name, Status: StatusOK, Detail: "running as root"}
	}
	if p.OpenReadWrite == nil {
		return Check{Name: name, Status: StatusWarn, Detail: "cannot check " + tunDevice + " on this host"}
	}
	if err := p.OpenReadWrite(tunDevice); err != nil {
		return Check{Name: name, Status: StatusFail,
			Detail: "cannot open " + tunDevice + " read-write (" + err.Error() + "): VMs cannot attach to their taps",
			Fix:    "sudo chmod 0666 " + tunDevice + " (what udev does on most distributions; each tap stays owned by its user), and make it last with a udev rule: KERNEL==\"tun\", MODE=\"0666\""}
	}
	return Check{Name: name, Status: StatusOK, Detail: tunDevice + " opens read-write"}
}
