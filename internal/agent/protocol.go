// Package agent is the wire protocol of banger's guest agent channel:
// HTTP/1.1 with JSON bodies and bearer-token auth, exec and attach
// upgraded to internal/stream frames. It holds the endpoint paths, the
// request and answer types, the error codes and Identity (the config
// drive's identity document). The host-side client and dialers live in
// agent/agentclient, the guest-side server in agent/agentserver, and the
// guest boot in agent/guest; where the agent listens is part of the guest
// contract (internal/guestcontract).
//
// It imports only the standard library, so both sides (and anything that
// only needs the types) can share it without linking the other side.
package agent

import (
	"fmt"
	"time"
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
	PathThaw     = "/thaw"
	PathIdentity = "/identity"
	PathStats    = "/stats"
)

// Reidentify is the body of POST /identity: a guest restored from memory
// saved by another VM (a warm start from an image's template, a fork)
// still holds that VM's hostname, MAC, address, ssh host keys and agent
// token. It takes Identity (Files aside: file_sync applies at boot) and
// HostKeys, which the host generated and has already pinned. The agent
// answers, then requires Identity.Token on every later request.
type Reidentify struct {
	Identity Identity  `json:"identity"`
	HostKeys []HostKey `json:"host_keys"`
}

// HostKey is one ssh host key pair, in the files' formats: Private as
// OpenSSH writes ssh_host_TYPE_key, Public as ssh_host_TYPE_key.pub.
type HostKey struct {
	Type    string `json:"type"` // "ed25519", "ecdsa" or "rsa"
	Private string `json:"private"`
	Public  string `json:"public"`
}

// Thaw is the body of POST /thaw, which the host sends first to a guest
// that ran again after being paused, suspended or restored from a
// snapshot: its clock stood still (or went back to the snapshot's time)
// and its random pool is a copy of another guest's.
type Thaw struct {
	// Time is the host's wall clock; the guest steps its clock to it.
	Time time.Time `json:"time"`
	// Entropy is mixed into (and credited to) the guest kernel's random
	// pool; at most MaxThawEntropy bytes.
	Entropy []byte `json:"entropy,omitempty"`
}

// MaxThawEntropy bounds Thaw.Entropy.
const MaxThawEntropy = 512

// ThawResult is the answer to POST /thaw.
type ThawResult struct {
	// ClockStep is how far the guest clock was moved (host minus guest
	// time before the step).
	ClockStep time.Duration `json:"clock_step_ns"`
}

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

// Identity is the config drive's identity document
// (guestcontract.IdentityFile): who this VM is. The
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
	// HostKeys are the ssh host keys the host made for this VM; they
	// replace any the guest has. Without them the agent generates keys
	// itself (older hosts), which under software emulation is slow.
	HostKeys []HostKey `json:"host_keys,omitempty"`
	// Env (KEY=VALUE) is added to the environment of every command and
	// session the agent runs, and of login shells: the placeholders of
	// the VM's secrets and the CA bundle variables. Each identity applied
	// replaces the last one's.
	Env []string `json:"env,omitempty"`
	// TrustCAs are PEM certificates the guest's trust stores take (the
	// VM's egress CA); each identity applied replaces the last one's.
	TrustCAs []string `json:"trust_cas,omitempty"`
	// InlineFiles are small files written at every boot and restore (the
	// placeholder files of the VM's secrets).
	InlineFiles []InlineFile `json:"inline_files,omitempty"`
}

// InlineFile is a file whose content travels in the identity itself.
type InlineFile struct {
	Guest   string `json:"guest"` // absolute guest path
	Content string `json:"content"`
	Mode    uint32 `json:"mode,omitempty"` // 0 means 0600
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

// ErrorBody is the JSON body of every non-2xx response.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// Error codes carried in error bodies. The host decides on these, never
// on an error's text; a code an older host does not know reads as a
// failure of the guest, so add one only with a host that handles it.
const (
	CodeUnauthorized    = "unauthorized"
	CodeBadRequest      = "bad_request"
	CodeNotFound        = "not_found"
	CodeCommandNotFound = "command_not_found"
	// CodeNoWorkingDir refuses an exec or session whose working directory
	// does not exist in the guest (HTTP 400, as bad_request; agents that
	// predate it sent bad_request).
	CodeNoWorkingDir = "no_working_dir"
	CodeConflict     = "conflict"
	CodeInternal     = "internal"
)

// Session states, as reported in SessionInfo.State.
const (
	SessionRunning = "running"
	SessionExited  = "exited"
	// SessionLost is a session recorded as running by an earlier agent
	// process that is gone (the agent restarted or the guest rebooted).
	SessionLost = "lost"
)

// SessionRequest starts a long-lived command (POST /sessions).
type SessionRequest struct {
	// Name identifies the session in the guest; empty picks one.
	Name string   `json:"name,omitempty"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
}

// SessionInfo describes a session (GET /sessions, /sessions/{name}).
type SessionInfo struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Dir  string   `json:"dir"`
	// EnvNames lists the names (never the values) of the extra
	// environment variables.
	EnvNames  []string   `json:"env_names,omitempty"`
	TTY       bool       `json:"tty"`
	PID       int        `json:"pid"`
	State     string     `json:"state"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// Exit is set once the session exited.
	Exit *ExitStatus `json:"exit,omitempty"`
	// OutputBytes counts all output ever produced (the log keeps the
	// most recent part).
	OutputBytes int64 `json:"output_bytes"`
}

// SignalRequest is the body of POST /sessions/{name}/signal.
type SignalRequest struct {
	Signal string `json:"signal"`
}

// Stats is one reading of the guest's resources (GET /stats): cumulative
// counters, so the host turns two readings into rates. A hostile guest
// may send anything here; the host bounds what it makes of it.
type Stats struct {
	// CPUBusy and CPUTotal are the guest kernel's CPU time in clock
	// ticks, summed over its CPUs (/proc/stat): busy excludes idle and
	// iowait.
	CPUBusy  uint64 `json:"cpu_busy"`
	CPUTotal uint64 `json:"cpu_total"`
	// MemTotal and MemAvailable are bytes (/proc/meminfo).
	MemTotal     uint64 `json:"mem_total"`
	MemAvailable uint64 `json:"mem_available"`
	// Load is the 1, 5 and 15 minute load averages.
	Load [3]float64 `json:"load"`
	// Root is the work disk mounted at /root; Overlay the root
	// filesystem's writable layer (the overlay drive).
	Root    DiskUse `json:"root"`
	Overlay DiskUse `json:"overlay"`
	// RxBytes and TxBytes are summed over the guest's NICs but lo.
	RxBytes uint64 `json:"rx_bytes"`
	TxBytes uint64 `json:"tx_bytes"`
}

// DiskUse is a filesystem's size and used bytes.
type DiskUse struct {
	Size uint64 `json:"size"`
	Used uint64 `json:"used"`
}
