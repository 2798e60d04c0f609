// Package tui is `banger tui`: a live terminal dashboard over the same
// api.Client the CLI uses. It shows VMs (with the CPU and memory use of
// each VMM process), images, the sessions and the console log of the
// selected VM, and acts on the selection: create, start, stop, restart,
// delete, ssh, attach and logs. Long operations show their stages live
// and can be cancelled.
//
// The Bubble Tea model is kept pure: every side effect goes through the
// small Client interface declared here, the ProcReader function and the
// Exec hook, so update tests drive it with hand-written fakes.
package tui

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"banger/internal/api"
	"banger/internal/procstat"
)

// Client is the part of the daemon API the dashboard uses; *api.Client
// implements it. Every method may be called from a command goroutine.
type Client interface {
	ListVMs(ctx context.Context) ([]api.VM, error)
	Images(ctx context.Context) ([]api.Image, error)
	CreateVM(ctx context.Context, req api.CreateVMRequest) (api.OperationRef, error)
	StartVM(ctx context.Context, ref string, req api.StartVMRequest) (api.OperationRef, error)
	RestartVM(ctx context.Context, ref string) (api.OperationRef, error)
	StopVM(ctx context.Context, ref string) (api.VM, error)
	DeleteVM(ctx context.Context, ref string, force bool) error
	// VMLogs streams the console log; with follow it stays open.
	VMLogs(ctx context.Context, ref string, follow bool) (io.ReadCloser, error)
	// OperationEvents replays an operation's events and follows live
	// ones until its done event.
	OperationEvents(ctx context.Context, id string) (*api.EventReader, error)
	// CancelOperation asks the daemon to cancel and roll back; the event
	// stream then reports the rollback and ends.
	CancelOperation(ctx context.Context, id string) error
	// Stats measures running VMs from their agents and VMMs (about a
	// second).
	Stats(ctx context.Context, refs ...string) ([]api.VMStats, error)
}

// SessionLister is the optional capability of listing a VM's sessions.
// A Client without it (or a daemon that does not serve sessions) makes
// the sessions view say "sessions: not available".
type SessionLister interface {
	Sessions(ctx context.Context, ref string) ([]api.Session, error)
}

var (
	_ Client        = (*api.Client)(nil)
	_ SessionLister = (*api.Client)(nil)
)

// CreateDefaults pre-fill the create form: the resolved VM defaults of
// this host and config.
type CreateDefaults struct {
	Name      string // "" leaves the name to the daemon
	Image     string
	VMM       string
	VCPU      int
	MemoryMiB int
	DiskBytes int64
}

// ProcSample is one reading of a process's CPU time and resident memory.
type ProcSample = procstat.Sample

// ReadProc reads the sample of a local process.
var ReadProc = procstat.Read

// ProcReader reads a process's sample (ReadProc in production).
type ProcReader func(pid int) (ProcSample, error)

// ExecFunc suspends the dashboard, runs cmd on the terminal and calls fn
// with its result (tea.ExecProcess in production).
type ExecFunc func(cmd *exec.Cmd, fn tea.ExecCallback) tea.Cmd

// Options configure the dashboard.
type Options struct {
	Client Client
	// Defaults pre-fill the create form.
	Defaults CreateDefaults
	// Self is the banger binary run for ssh and attach ("banger" when
	// empty); Env its environment (nil inherits).
	Self string
	Env  []string
	// AttachCommand says `banger vm session attach` exists.
	AttachCommand bool
	// Interval between refreshes (1s when zero).
	Interval time.Duration
	// ReadProc samples VMM processes (ReadProc when nil).
	ReadProc ProcReader
	// Exec runs ssh and attach (tea.ExecProcess when nil).
	Exec ExecFunc
	// Renderer styles the output (lipgloss's default, which honours
	// NO_COLOR, when nil).
	Renderer *lipgloss.Renderer
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Run shows the dashboard on the terminal until the user quits or ctx
// ends.
func Run(ctx context.Context, opts Options, in io.Reader, out io.Writer) error {
	if opts.Renderer == nil {
		opts.Renderer = lipgloss.NewRenderer(out)
	}
	p := tea.NewProgram(New(opts),
		tea.WithContext(ctx), tea.WithAltScreen(),
		tea.WithInput(in), tea.WithOutput(out))
	m, err := p.Run()
	if fm, ok := m.(Model); ok {
		fm.closeStreams()
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("run dashboard: %w", err)
	}
	return nil
}

// selfBinary returns the banger binary to run for ssh and attach.
func (o Options) selfBinary() string {
	if o.Self != "" {
		return o.Self
	}
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "banger"
}
