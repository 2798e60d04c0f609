// Package guestcontract holds every fact the host and the guest must agree
// on: filesystem labels, the kernel command line, where banger-agent lives
// and how it is started, the agent channel (vsock port, virtio-serial port
// name), the names on the config drive and the rules of the guest subnet.
// The image builders, the VMM drivers, the daemon and the agent all read
// them from here, so a change to the contract is a change to this one file
// (ARCHITECTURE.md, "Guest contract", describes the same facts in prose).
//
// It imports only the standard library, so any binary, the guest agent
// included, can depend on it.
package guestcontract

import (
	"fmt"
	"net/netip"
)

// Filesystem labels. The guest finds every drive by label, never by
// device order.
const (
	// LabelRoot labels the image's shared, read-only root filesystem.
	LabelRoot = "banger-root"
	// LabelOverlay labels the per-VM overlay drive whose upper/ and
	// work/ directories the initramfs stacks over the read-only root.
	LabelOverlay = "banger-overlay"
	// LabelWork labels the per-VM work disk mounted at WorkMountPoint.
	LabelWork = "banger-work"
	// LabelConfig labels the per-VM config drive (IdentityFile, FilesDir).
	LabelConfig = "banger-config"
)

// WorkMountPoint is where the work disk is mounted in the guest (by the
// initramfs, or by the agent when the initramfs did not).
const WorkMountPoint = "/root"

// InitramfsModuleOrder is where banger's initramfs lists the kernel
// modules its /init (banger-agent) loads, one absolute path per line,
// each after those it depends on.
const InitramfsModuleOrder = "/lib/modules/banger.order"

// Kernel command-line parameters read by the image's initramfs.
const (
	// ParamOverlay names the overlay drive ("LABEL=banger-overlay").
	ParamOverlay = "banger.overlay"
	// ParamWork names the work drive ("LABEL=banger-work").
	ParamWork = "banger.work"
)

// BaseCmdline is the kernel command line every banger guest boots with.
// Drivers append only what they must (QEMU under TCG adds tsc_early_khz
// and tsc=reliable).
const BaseCmdline = "console=ttyS0 reboot=k panic=-1 root=LABEL=" + LabelRoot + " ro rootwait" +
	" " + ParamOverlay + "=LABEL=" + LabelOverlay + " " + ParamWork + "=LABEL=" + LabelWork

// KernelCmdline returns the kernel command line of a guest: BaseCmdline,
// plus init=AgentPath when banger-agent runs as PID 1 (images without
// systemd).
func KernelCmdline(agentInit bool) string {
	if agentInit {
		return BaseCmdline + " init=" + AgentPath
	}
	return BaseCmdline
}

// AgentPath is where every image installs banger-agent.
const AgentPath = "/usr/local/bin/banger-agent"

// Agent channel. The guest listens on AgentVsockPort when the VMM gives it
// a vsock device, else on the virtio-serial port AgentSerialPort carrying
// a yamux session (the guest is the yamux server).
const (
	// AgentVsockPort is the vsock port the agent listens on.
	AgentVsockPort = 1024
	// AgentSerialPort is the name of the virtio-serial port carrying the
	// agent channel; udev links it at VirtioPortsDir/AgentSerialPort.
	AgentSerialPort = "banger.agent"
	// VirtioPortsDir is where udev links named virtio-serial ports.
	VirtioPortsDir = "/dev/virtio-ports"
)

// Names on the config drive (LabelConfig).
const (
	// IdentityFile is the identity document at the drive's root (the
	// JSON of agent.Identity).
	IdentityFile = "identity.json"
	// FilesDir holds the file_sync payload next to IdentityFile.
	FilesDir = "files"
)

// Systemd integration, for images that boot systemd.
const (
	// UnitDir is where images install system units.
	UnitDir = "/etc/systemd/system"
	// AgentUnitName is the unit that runs banger-agent.
	AgentUnitName = "banger-agent.service"
)

// sshd, for images that boot systemd: one sshd per connection, started by
// a socket systemd holds. Each connection's sshd reads the host keys
// afresh, so a guest restored from another VM's memory serves the keys
// its agent just installed without an sshd restart (a restart closes
// port 22 for as long as sshd takes to re-execute, half a second under
// emulation), and the port stays open throughout.
const (
	// SSHSocketName listens on port 22 once the agent is ready.
	SSHSocketName = "banger-sshd.socket"
	// SSHServiceName is the template of the per-connection sshd.
	SSHServiceName = "banger-sshd@.service"
)

// SSHSocketUnit is the text of SSHSocketName. It is ordered after the
// agent (ready once the VM's host keys are installed and, with the early
// agent, once the unit adopted it, so a VM whose sshd listens is one
// whose agent is settled: templates and snapshots are taken after
// that), not after sysinit: under emulation sysinit takes seconds, and a
// connection needs only the keys. It replaces the distribution's
// ssh.service, which it conflicts with (both want port 22).
const SSHSocketUnit = `[Unit]
Description=OpenSSH server socket, one sshd per connection (banger)
DefaultDependencies=no
After=` + AgentUnitName + `
Before=sockets.target shutdown.target
Conflicts=shutdown.target ssh.service
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Socket]
ListenStream=22
Accept=yes

[Install]
WantedBy=sockets.target
`

// SSHServiceUnit is the text of SSHServiceName: sshd in inetd mode on the
// accepted connection. /run/sshd (its privilege separation directory) is
// kept when one instance ends, as others may still use it.
const SSHServiceUnit = `[Unit]
Description=OpenSSH server for one connection (banger)
DefaultDependencies=no
Before=shutdown.target
Conflicts=shutdown.target

[Service]
EnvironmentFile=-/etc/default/ssh
ExecStart=-/usr/sbin/sshd -i $SSHD_OPTS
StandardInput=socket
StandardError=journal
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
`

// AgentUnit is the text of AgentUnitName. It starts as soon as systemd
// starts units: no default dependencies and no ordering after udev or
// local filesystems, because the initramfs has already loaded the virtio
// drivers (its udev coldplugs every device), mounted the root and /root,
// and the agent finds its drives and port through /sys, not udev's
// symlinks. It runs before sshd and network-online.target so the identity
// (hostname, address, keys, host keys) is in place before they start, and
// tells systemd it is ready once the identity is applied and the
// listeners run. When banger's initramfs already started the agent (the
// early agent: identity applied before systemd ran), ExecStart adopts it
// instead: it makes it the unit's main process and reports ready, then
// exits; NotifyAccess=all lets that exiting process send the barrier
// that orders its exit after the messages. Install it in UnitDir and
// enable it (a symlink in multi-user.target.wants).
const AgentUnit = `[Unit]
Description=banger guest agent
Documentation=man:banger(1)
DefaultDependencies=no
Before=ssh.service sshd.service banger-sshd.socket network-online.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=notify
NotifyAccess=all
ExecStart=` + AgentPath + ` serve
Restart=always
RestartSec=1
TimeoutStartSec=90
KillMode=mixed

[Install]
WantedBy=multi-user.target
`

// Guest subnet bounds: room for a gateway and guests, small enough to stay
// a single bridge.
const (
	MinSubnetBits = 16
	MaxSubnetBits = 29
)

// CheckSubnet returns an error unless subnet is an IPv4 network address
// (no host bits) with a length between MinSubnetBits and MaxSubnetBits.
func CheckSubnet(subnet netip.Prefix) error {
	switch {
	case !subnet.IsValid() || !subnet.Addr().Is4():
		return fmt.Errorf("subnet %s: must be an IPv4 prefix", subnet)
	case subnet.Masked() != subnet:
		return fmt.Errorf("subnet %s: host bits are set", subnet)
	case subnet.Bits() < MinSubnetBits || subnet.Bits() > MaxSubnetBits:
		return fmt.Errorf("subnet %s: length must be between /%d and /%d", subnet, MinSubnetBits, MaxSubnetBits)
	}
	return nil
}

// Gateway returns the guests' gateway, the host's address on the bridge:
// the first address of the subnet (10.77.0.1 for 10.77.0.0/24).
func Gateway(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// Where the agent puts what the egress policy gives a guest (see
// agent.Identity.Env and TrustCAs).
const (
	// CAFile holds the VM's egress CA certificate; Node reads it through
	// NODE_EXTRA_CA_CERTS, update-ca-certificates would pick it up too.
	CAFile = "/usr/local/share/ca-certificates/banger-egress.crt"
	// CABundle is the system bundle (OpenSSL, curl, git, Go, Python's
	// requests through REQUESTS_CA_BUNDLE); the agent appends the CA to
	// it between CABundleBegin and CABundleEnd lines.
	CABundle      = "/etc/ssl/certs/ca-certificates.crt"
	CABundleBegin = "# banger egress CA: begin"
	CABundleEnd   = "# banger egress CA: end"
	// EnvFile exports the identity's environment to login shells.
	EnvFile = "/etc/profile.d/banger-env.sh"
)

// CAEnv are the variables that point the usual clients at the bundle
// holding the egress CA, for a guest given secrets.
func CAEnv() []string {
	return []string{
		"NODE_EXTRA_CA_CERTS=" + CAFile,
		"SSL_CERT_FILE=" + CABundle,
		"REQUESTS_CA_BUNDLE=" + CABundle,
		"CURL_CA_BUNDLE=" + CABundle,
		"GIT_SSL_CAINFO=" + CABundle,
		"PIP_CERT=" + CABundle,
		"DENO_CERT=" + CABundle,
	}
}
