// Package sessionctl orchestrates what the daemon does inside a running
// guest on a user's behalf: sessions (long-lived commands the guest agent
// runs: start, stop, attach, logs, remove, and the reconcile that merges
// the store's metadata with the guest's live view) and the workspace at
// /root/repo (status, prepare from a tar, bundle the guest's commits).
//
// The live processes and their output stay in the guest; the store keeps
// each session's durable metadata. Every read reconciles the two, so a
// session the guest forgot (its agent restarted, the VM rebooted) is
// recorded as lost, and one only the guest knows is adopted.
//
// It talks to the guest through the small Guest interface
// (agentclient.Client implements it) and finds a VM's agent through
// Agents (the daemon adapts vmctl.Manager), so it is tested with fakes.
package sessionctl

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/store"
)

// SessionAgent is the session half of a guest agent. Start refuses a
// name that is running (agent.CodeConflict); Signal of an ended session
// is agent.CodeConflict, of an unknown one agent.CodeNotFound; Remove of
// a running session is agent.CodeConflict.
type SessionAgent interface {
	StartSession(ctx context.Context, req agent.SessionRequest) (agent.SessionInfo, error)
	Sessions(ctx context.Context) ([]agent.SessionInfo, error)
	Session(ctx context.Context, name string) (agent.SessionInfo, error)
	SignalSession(ctx context.Context, name, signal string) error
	RemoveSession(ctx context.Context, name string) error
	SessionLogs(ctx context.Context, name string, follow bool) (io.ReadCloser, error)
	// AttachSession bridges eio to the session until it exits (its
	// status) or ctx ends (a detach: ctx's error).
	AttachSession(ctx context.Context, name string, opts agentclient.AttachOptions, eio agentclient.ExecIO) (agent.ExitStatus, error)
}

// WorkspaceAgent is the command and file half of a guest agent the
// workspace needs. Upload unpacks a tar stream into a guest directory;
// Download answers a tar stream holding the one file named.
type WorkspaceAgent interface {
	Exec(ctx context.Context, req agent.ExecRequest, eio agentclient.ExecIO) (agent.ExitStatus, error)
	Upload(ctx context.Context, guestDir string, tarStream io.Reader) error
	Download(ctx context.Context, guestPath string) (io.ReadCloser, error)
}

// Guest is one VM's agent as sessionctl uses it.
type Guest interface {
	SessionAgent
	WorkspaceAgent
}

var _ Guest = (*agentclient.Client)(nil)

// Agents finds the agent of a VM.
type Agents interface {
	// Agent returns the agent of running VM ref. For a VM that exists
	// but cannot be reached (stopped, paused, suspended) it returns the
	// VM and an error already carrying its API code; for an unknown VM,
	// a zero VM and the lookup error.
	Agent(ctx context.Context, ref string) (Guest, store.VM, error)
}

// Options are the Manager's collaborators and tunables.
type Options struct {
	Store  *store.Store
	Agents Agents
	Logger *slog.Logger
	// GuestTimeout bounds each short agent call (list, start, signal);
	// zero means 30 s.
	GuestTimeout time.Duration
	// WorkspaceTimeout bounds a workspace status script; zero means
	// 5 min.
	WorkspaceTimeout time.Duration
	// StopPoll is how often a stop asks whether the session exited; zero
	// means 200 ms.
	StopPoll time.Duration
	// Now is the clock of stop deadlines; nil means time.Now.
	Now func() time.Time
}

// Manager runs sessions and workspaces. It is safe for concurrent use:
// session starts on one VM are serialised (so two never pick the same
// generated name), starts on different VMs run side by side.
type Manager struct {
	opt   Options
	log   *slog.Logger
	locks vmLocks
}

// New returns a Manager over opt.
func New(opt Options) *Manager {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.GuestTimeout <= 0 {
		opt.GuestTimeout = 30 * time.Second
	}
	if opt.WorkspaceTimeout <= 0 {
		opt.WorkspaceTimeout = 5 * time.Minute
	}
	if opt.StopPoll <= 0 {
		opt.StopPoll = 200 * time.Millisecond
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Manager{opt: opt, log: opt.Logger, locks: vmLocks{held: map[string]*vmLock{}}}
}

// Log attribute keys.
const (
	logKeyVM      = "vm"
	logKeySession = "session"
	logKeyErr     = "err"
)

// vmLocks hands out one lock per VM id. A lock is dropped from the map
// when its last holder or waiter is done, so the map holds only VMs in
// use.
type vmLocks struct {
	mu   sync.Mutex
	held map[string]*vmLock
	// waiting, when set (tests), is called before a lock() blocks behind
	// another holder of the same VM's lock.
	waiting func(vmID string)
}

type vmLock struct {
	ch   chan struct{} // one slot: full while held
	refs int           // holders and waiters
}

// lock takes the VM's lock, waiting for the holder to let go or ctx to
// end. The returned func releases it.
func (l *vmLocks) lock(ctx context.Context, vmID string) (func(), error) {
	l.mu.Lock()
	e, ok := l.held[vmID]
	if !ok {
		e = &vmLock{ch: make(chan struct{}, 1)}
		l.held[vmID] = e
	}
	e.refs++
	waiting := l.waiting
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.held, vmID)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	default:
	}
	if waiting != nil {
		waiting(vmID)
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
