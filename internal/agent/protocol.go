// Package agent is banger's guest agent channel: the wire protocol (HTTP/1.1
// with JSON bodies and bearer-token auth, exec upgraded to internal/stream
// frames), the host-side Client and its Dialers (Firecracker hybrid vsock,
// QEMU virtio-serial carrying yamux), and the guest-side Server that
// banger-agent runs.
//
// The host never trusts the guest: every response is size-limited and every
// request is bounded by timeouts, so a broken or hostile guest can fail a
// call but cannot hang or crash the daemon.
package agent

import (
	"fmt"
	"time"
)

// VsockPort is the vsock port the guest agent listens on.
const VsockPort = 1024

// SerialPortName is the name of the virtio-serial port carrying the agent
// channel; the guest sees it as /dev/virtio-ports/banger.agent.
const SerialPortName = "banger.agent"

// ConfigLabel is the filesystem label of the per-VM config drive.
const ConfigLabel = "banger-config"

// WorkLabel is the filesystem label of the per-VM work disk mounted at /root.
const WorkLabel = "banger-work"

// IdentityFile is the name of the identity document at the root of the
// config drive; SyncFile sources live under ConfigFilesDir next to it.
const (
	IdentityFile   = "identity.json"
	ConfigFilesDir = "files"
)

// UpgradeProtocol is the value of the Upgrade header of an exec request.
const UpgradeProtocol = "banger-stream/1"

// API paths.
const (
	PathHealth   = "/healthz"
	PathExec     = "/exec"
	PathFiles    = "/files"
	PathPorts    = "/ports"
	PathHostKeys = "/hostkeys"
	PathSessions = "/sessions"
)

// ErrorTrailer is the HTTP trailer a streaming response (a download) sets
// when it fails after the status line was sent.
const ErrorTrailer = "X-Banger-Error"

// Health is the answer to GET /healthz.
type Health struct {
	// Version is the agent's build version.
	Version string `json:"version"`
	// BootID is the kernel's boot id; it changes on every boot.
	BootID string `json:"boot_id"`
	// Uptime is the time since the guest kernel booted.
	Uptime time.Duration `json:"uptime_ns"`
	// Load holds the 1, 5 and 15 minute load averages.
	Load [3]float64 `json:"load"`
	// Init is "systemd" when systemd is PID 1, "agent" when banger-agent
	// is, or the name of another init.
	Init string `json:"init"`
	// SystemState is systemd's `is-system-running` answer ("starting",
	// "running", "degraded", ...); empty without systemd.
	SystemState string `json:"system_state,omitempty"`
	// MultiUser reports whether multi-user.target is active (always true
	// without systemd once the agent serves).
	MultiUser bool `json:"multi_user"`
	// Hostname is the guest's hostname.
	Hostname string `json:"hostname"`
	// IdentityApplied reports whether the boot-time identity apply succeeded;
	// IdentityError holds its error otherwise.
	IdentityApplied bool   `json:"identity_applied"`
	IdentityError   string `json:"identity_error,omitempty"`
}

// ExecRequest describes a command to run in the guest.
type ExecRequest struct {
	// Argv is the command and its arguments; Argv[0] is looked up in the
	// PATH of the resulting environment when it has no slash.
	Argv []string `json:"argv"`
	// Env holds KEY=VALUE entries added to (and overriding) the agent's
	// base environment.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty means the user's home (/root).
	Dir string `json:"dir,omitempty"`
	// TTY allocates a pseudo-terminal of Cols x Rows; stdout and stderr
	// are then one stream (Stdout).
	TTY  bool   `json:"tty,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
}

// ExitStatus is how a guest command ended.
type ExitStatus struct {
	// Code is the exit code; for a command killed by a signal it is
	// 128 + the signal number, as shells report it.
	Code int `json:"code"`
	// Signal names the signal that killed the command ("SIGTERM"), if any.
	Signal string `json:"signal,omitempty"`
}

// String renders the status for messages.
func (e ExitStatus) String() string {
	if e.Signal != "" {
		return fmt.Sprintf("killed by %s (exit %d)", e.Signal, e.Code)
	}
	return fmt.Sprintf("exit %d", e.Code)
}

// Port is one listening socket in the guest.
type Port struct {
	// Proto is "tcp" or "udp".
	Proto string `json:"proto"`
	// Family is "ipv4" or "ipv6".
	Family string `json:"family"`
	// Address is the local address ("0.0.0.0", "::", "127.0.0.1").
	Address string `json:"address"`
	// Port is the local port.
	Port uint16 `json:"port"`
	// PID and Process name the owning process when it could be found.
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

// Identity is identity.json on the config drive: who this VM is. The
// daemon writes it when it builds the config drive; the agent applies it
// at every boot.
type Identity struct {
	// VMID is banger's id of the VM.
	VMID string `json:"vm_id"`
	// Hostname is the guest's hostname (the VM name).
	Hostname string `json:"hostname"`
	// Address is the guest's IPv4 address in CIDR form ("10.0.3.7/24").
	Address string `json:"address,omitempty"`
	// Gateway is the default gateway.
	Gateway string `json:"gateway,omitempty"`
	// DNS lists resolvers for /etc/resolv.conf.
	DNS []string `json:"dns,omitempty"`
	// MAC is the guest NIC's MAC address; the agent configures the NIC
	// with this address, or the first non-loopback NIC when none matches.
	MAC string `json:"mac,omitempty"`
	// AuthorizedKeys are public keys for /root/.ssh/authorized_keys.
	AuthorizedKeys []string `json:"authorized_keys,omitempty"`
	// Token is the bearer token the agent requires on every request.
	Token string `json:"token"`
	// Files are file_sync entries to install.
	Files []SyncFile `json:"files,omitempty"`
}

// SyncFile is one file_sync entry as it reaches the guest.
type SyncFile struct {
	// Source is the path inside the config drive's files/ directory
	// ("0/token.json"); a path that starts with "files/" is also accepted.
	Source string `json:"source"`
	// Guest is the absolute destination path in the guest.
	Guest string `json:"guest"`
	// Mode is the file's permission bits (0 means 0600); ignored for
	// directories, whose files keep their own modes.
	Mode uint32 `json:"mode,omitempty"`
	// Dir says Source is a directory to copy recursively.
	Dir bool `json:"dir,omitempty"`
}

// errorBody is the JSON body of every non-2xx response.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// Error codes carried in error bodies.
const (
	CodeUnauthorized    = "unauthorized"
	CodeBadRequest      = "bad_request"
	CodeNotFound        = "not_found"
	CodeCommandNotFound = "command_not_found"
	CodeConflict        = "conflict"
	CodeInternal        = "internal"
)
