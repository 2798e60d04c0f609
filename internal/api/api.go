// Package api defines everything that crosses the bangerd unix socket: the
// wire types, the error codes, the attach-stream upgrade and the typed
// Client. The transport is HTTP/1.1 with JSON bodies over the socket;
// long operations stream newline-delimited JSON events, and attach
// sessions upgrade the connection to a bidirectional frame stream.
//
// This package imports only the standard library so that every program
// talking to the daemon (the CLI, the dashboard, tests) can link it
// without pulling in host-facing code.
package api

import (
	"encoding/json"
	"time"
)

// Endpoint paths served by bangerd. Paths with {id} take an operation id.
const (
	PathVersion          = "/v1/version"
	PathStatus           = "/v1/status"
	PathDaemonStop       = "/v1/daemon/stop"
	PathDaemonLogs       = "/v1/daemon/logs"
	PathOperations       = "/v1/operations"
	PathOperation        = "/v1/operations/{id}"
	PathOperationEvents  = "/v1/operations/{id}/events"
	PathOperationCancel  = "/v1/operations/{id}/cancel"
	PathVMs              = "/v1/vms"
	ContentTypeJSON      = "application/json"
	ContentTypeNDJSON    = "application/x-ndjson"
	maxErrorBodyBytes    = 64 << 10
	defaultDaemonAddress = "bangerd" // Host of every request; the socket decides where it goes.
)

// VersionInfo identifies the running daemon build; the CLI compares its
// BuildStamp with its own to decide whether to replace the daemon.
type VersionInfo struct {
	Version    string    `json:"version"`
	BuildStamp time.Time `json:"build_stamp"`
	PID        int       `json:"pid"`
}

// Status describes the running daemon and what it manages.
type Status struct {
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	BuildStamp time.Time `json:"build_stamp"`
	StartedAt  time.Time `json:"started_at"`
	Socket     string    `json:"socket"`
	StateDir   string    `json:"state_dir"`
	LogFile    string    `json:"log_file"`
	ConfigFile string    `json:"config_file"` // "" when no config file exists
	DNSListen  string    `json:"dns_listen"`  // "" when the DNS server is not serving
	VMs        int       `json:"vms"`
	Images     int       `json:"images"`
	Operations int       `json:"operations"` // operations currently running
}

// OperationState is the overall state of an operation.
type OperationState string

// Operation states. Every operation starts running and ends in exactly one
// of the other three.
const (
	OpRunning   OperationState = "running"
	OpSucceeded OperationState = "succeeded"
	OpFailed    OperationState = "failed"
	OpCanceled  OperationState = "canceled"
)

// StageState is the state of one stage of an operation.
type StageState string

// Stage states. Planned stages start pending; a started stage is running
// and ends done, failed or skipped. Stages never started by the time the
// operation ends become skipped.
const (
	StagePending StageState = "pending"
	StageRunning StageState = "running"
	StageDone    StageState = "done"
	StageFailed  StageState = "failed"
	StageSkipped StageState = "skipped"
)

// Progress is a countable measure of a stage's work, e.g. bytes copied.
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"` // 0 when unknown
	// Unit says what Done and Total count; "" is a plain count of steps.
	Unit ProgressUnit `json:"unit,omitempty"`
}

// ProgressUnit names what a Progress counts, so clients can format it
// ("12.3 MiB/27.1 MiB", "120/345 packages").
type ProgressUnit string

// Progress units.
const (
	UnitBytes    ProgressUnit = "bytes"
	UnitFiles    ProgressUnit = "files"
	UnitPackages ProgressUnit = "packages"
)

// Stage is one ordered step of an operation.
type Stage struct {
	Name     string        `json:"name"`
	State    StageState    `json:"state"`
	Started  time.Time     `json:"started,omitzero"`
	Duration time.Duration `json:"duration,omitzero"` // nanoseconds; while running, time so far
	Detail   string        `json:"detail,omitempty"`
	Progress *Progress     `json:"progress,omitempty"`
}

// Operation is a snapshot of long-running work in the daemon.
type Operation struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	State    OperationState  `json:"state"`
	Created  time.Time       `json:"created"`
	Finished time.Time       `json:"finished,omitzero"`
	Stages   []Stage         `json:"stages"`
	Log      []string        `json:"log,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    *Error          `json:"error,omitempty"`
}

// OperationRef is returned by every endpoint that starts an operation;
// follow it with Client.OperationEvents or Client.WaitOperation.
type OperationRef struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
}

// EventType says what an Event reports.
type EventType string

// Event types. A stream of events always ends with exactly one EventDone.
const (
	EventStage EventType = "stage" // a stage was planned, started, updated or finished
	EventLog   EventType = "log"   // a log line of the operation
	EventDone  EventType = "done"  // the operation finished (after any rollback)
)

// Event is one entry of an operation's event stream. Seq starts at 1 and
// has no gaps, so a reader can tell it saw everything.
type Event struct {
	Seq  int       `json:"seq"`
	Time time.Time `json:"time"`
	Type EventType `json:"type"`
	Op   string    `json:"op"`

	// EventStage: the stage's state after the change and its index in
	// Operation.Stages.
	StageIndex int    `json:"stage_index,omitempty"`
	Stage      *Stage `json:"stage,omitempty"`

	// EventLog: the line.
	Message string `json:"message,omitempty"`

	// EventDone: the final state and result or error.
	State  OperationState  `json:"state,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// VMSpec is the shape of a VM: how many vCPUs, how much memory and the
// size of its work disk.
type VMSpec struct {
	VCPU      int   `json:"vcpu"`
	MemoryMiB int   `json:"memory_mib"`
	DiskBytes int64 `json:"disk_bytes"`
}

// CreateVMRequest asks the daemon to create (and boot) a VM. Empty string
// fields mean "the daemon's default". The response is an OperationRef.
type CreateVMRequest struct {
	Name  string `json:"name,omitempty"`
	Image string `json:"image,omitempty"`
	VMM   string `json:"vmm,omitempty"`
	Spec  VMSpec `json:"spec"`
	// Cold boots the kernel even when a warm template of the image fits
	// the spec.
	Cold bool `json:"cold,omitempty"`
	// From makes the VM from a named snapshot, VM@SNAP: its image, VMM
	// and shape are the snapshot's (Image and Spec are ignored).
	From string `json:"from,omitempty"`
	// Net is the egress mode (NetOpen, NetAllow, NetNone); empty means the
	// config default, or the snapshot's policy for From.
	Net string `json:"net,omitempty"`
	// Allow are the egress rules for NetAllow (see NetPolicy.Allow);
	// @NAME names a preset.
	Allow []string `json:"allow,omitempty"`
	// Secrets names the [[secret]]s the VM may use; empty means those
	// marked default (or the snapshot's, for From).
	Secrets []string `json:"secrets,omitempty"`
	// NoSSHWait finishes the create once the guest agent answers, without
	// waiting for sshd to listen, for callers that use only the agent
	// (`vm run -- CMD`). A create that makes the image's warm template
	// waits anyway, so the template has sshd listening. `vm ssh` waits
	// for sshd itself.
	NoSSHWait bool `json:"no_ssh_wait,omitempty"`
}
