// Package cli is the banger command line: cobra commands, output (tables,
// --json) and progress rendering. It talks to bangerd only through the
// api.Client and starts the daemon when it is not running (autostart.go).
//
// To add a command: write `func newXCmd(a *app) *cobra.Command` in its own
// file and add it to the list in newRootCmd. Commands that need the daemon
// call a.client(ctx); commands that start an operation follow it with
// a.followOperation (progress.go), which renders stages on stderr and
// turns Ctrl-C into a cancel that waits for the rollback.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/api"
	"banger/internal/config"
)

// IOStreams are the command's standard streams. Results go to Out,
// progress and errors to ErrOut.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// ErrTTY says ErrOut is a terminal: progress is animated in place.
	ErrTTY bool
	// Interrupt, when set, replaces SIGINT while an operation is
	// followed (tests send on it).
	Interrupt <-chan os.Signal
}

// StdStreams returns the process's standard streams.
func StdStreams() IOStreams {
	return IOStreams{
		In:     os.Stdin,
		Out:    os.Stdout,
		ErrOut: os.Stderr,
		ErrTTY: term.IsTerminal(int(os.Stderr.Fd())),
	}
}

// exitError ends the command with a status and no further message (the
// command already printed what the user needs).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// app is the state shared by the commands of one invocation.
type app struct {
	streams  IOStreams
	jsonOut  bool
	logLevel string
	// replaceDaemon waits for a busy older daemon instead of using it.
	replaceDaemon bool

	paths    config.Paths
	pathsErr error
	cfg      *config.Config
	cfgErr   error
	host     config.HostInfo

	api *api.Client
}

// Main runs the banger command line with args (without the program name)
// and returns the exit status: 0 on success, 1 on error, 2 on a usage
// error, or the status a command chose. The error is printed once.
func Main(ctx context.Context, args []string, streams IOStreams) int {
	a := newApp(streams)
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(streams.ErrOut, "banger: %v\nRun '%s --help' for usage.\n", ue.err, ue.cmd)
		return 2
	}
	fmt.Fprintf(streams.ErrOut, "banger: %v\n", err)
	return 1
}

// usageError is a flag or argument mistake.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// newApp loads what the commands need to build their flags: paths, config
// (an invalid config is kept as an error that commands report) and the
// host's size for VM defaults.
func newApp(streams IOStreams) *app {
	a := &app{streams: streams}
	a.paths, a.pathsErr = config.DefaultPaths()
	if a.pathsErr == nil {
		a.cfg, a.cfgErr = config.Load(a.paths.ConfigFile)
	}
	a.host, _ = config.ProbeHost() // zero fields fall back to built-ins
	return a
}

// config returns the loaded config or the reason it could not be loaded.
func (a *app) config() (*config.Config, error) {
	if a.pathsErr != nil {
		return nil, a.pathsErr
	}
	if a.cfgErr != nil {
		return nil, a.cfgErr
	}
	return a.cfg, nil
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "banger",
		Short: "Disposable Linux microVMs on your workstation",
		Long: "banger gives you disposable, fast, isolated Linux microVMs: `banger vm run` boots a\n" +
			"real VM with its own kernel in seconds. The CLI talks to bangerd, started on demand.",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().BoolVar(&a.jsonOut, "json", false, "print results as JSON")
	root.PersistentFlags().BoolVar(&a.replaceDaemon, "replace-daemon", false, "when a running bangerd is older but busy, wait for its operations and replace it (default: use it as it is)")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "", "log level of a bangerd started by this command: debug, info, warn, error")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{cmd: c.CommandPath(), err: err}
	})
	root.AddCommand(
		newDaemonCmd(a),
		newDoctorCmd(a),
		newImageCmd(a),
		newVersionCmd(a),
		newVMCmd(a),
		newTUICmd(a),
		newMCPCmd(a),
	)
	wireCompletion(a, root)
	applyExamples(root)
	return root
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("unexpected argument %q", args[0])}
	}
	return nil
}
