package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/api"
	"banger/internal/stream"
	"banger/internal/tarfs"
	"banger/internal/termsafe"
	"banger/internal/units"
)

// guestCmds are the vm subcommands that reach into a running guest.
func guestCmds(a *app) []*cobra.Command {
	return []*cobra.Command{newExecCmd(a), newSSHCmd(a), newCpCmd(a), newPortsCmd(a), newHealthCmd(a), newStatsCmd(a), newLogsCmd(a)}
}

func newExecCmd(a *app) *cobra.Command {
	var (
		tty bool
		env []string
		dir string
	)
	cmd := &cobra.Command{
		Use:   "exec NAME [-t] [-e K=V]... [-w DIR] -- CMD [ARGS...]",
		Short: "Run a command in a running VM through its agent",
		Long: "Run a command in the guest with your stdin, stdout and stderr; banger exits with\n" +
			"the command's exit code. Ctrl-C is forwarded. -t allocates a terminal.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("put the command after --: banger vm exec NAME -- CMD")}
			}
			for _, kv := range env {
				if !strings.Contains(kv, "=") {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("-e %q: want KEY=VALUE", kv)}
				}
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			code, err := a.exec(cmd.Context(), c, args[0], api.ExecRequest{Argv: args[1:], Env: env, Dir: dir, TTY: tty})
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal in the guest and put the local one in raw mode")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE), repeatable")
	cmd.Flags().StringVarP(&dir, "workdir", "w", "", "working directory in the guest (default /root)")
	return cmd
}

// exec runs req in the guest of ref with the caller's stdio and returns
// the command's exit code. With TTY, the local terminal is put in raw mode
// and its size follows SIGWINCH.
func (a *app) exec(ctx context.Context, c *api.Client, ref string, req api.ExecRequest) (int, error) {
	in := a.streams.In
	inFile, isFile := in.(*os.File)
	if req.TTY {
		if !isFile || !term.IsTerminal(int(inFile.Fd())) {
			return 0, errors.New("-t needs a terminal on stdin")
		}
		cols, rows, err := term.GetSize(int(inFile.Fd()))
		if err == nil {
			req.Cols, req.Rows = uint16(cols), uint16(rows)
		}
	}
	conn, err := c.Exec(ctx, ref, req)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	sc := stream.NewConn(conn)
	if req.TTY {
		old, err := term.MakeRaw(int(inFile.Fd()))
		if err != nil {
			return 0, fmt.Errorf("raw terminal: %w", err)
		}
		defer term.Restore(int(inFile.Fd()), old)
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if cols, rows, err := term.GetSize(int(inFile.Fd())); err == nil {
					_ = sc.WriteFrame(stream.Resize, stream.EncodeResize(uint16(cols), uint16(rows)))
				}
			}
		}()
	} else {
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(sigs)
		go func() {
			for s := range sigs {
				name := strings.TrimPrefix(strings.ToUpper(s.String()), "SIG")
				switch s {
				case syscall.SIGINT:
					name = "INT"
				case syscall.SIGTERM:
					name = "TERM"
				case syscall.SIGHUP:
					name = "HUP"
				}
				_ = sc.WriteFrame(stream.Signal, []byte(name))
			}
		}()
	}
	go func() {
		if in != nil {
			if _, err := sc.Pump(stream.Stdin, in); err != nil {
				return
			}
		}
		_ = sc.WriteFrame(stream.StdinEOF, nil)
	}()
	code, err := a.demuxStdio(sc)
	if err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	return code, nil
}

// errStreamEnded reports an attach stream that ended without an exit
// status or an error frame.
var errStreamEnded = errors.New("stream ended without an exit status")

// demuxStdio copies stdout and stderr frames to the caller's streams
// until the exit frame, whose code it returns, or an error frame, whose
// message it returns as the error. A stream cut before either wraps
// errStreamEnded.
func (a *app) demuxStdio(sc *stream.Conn) (int, error) {
	code := -1
	var remote error
	errDone := errors.New("done")
	err := sc.Demux(map[stream.Kind]func(stream.Frame) error{
		stream.Stdout: stream.Sink{W: a.streams.Out}.Deliver,
		stream.Stderr: stream.Sink{W: a.streams.ErrOut}.Deliver,
		stream.Exit: func(f stream.Frame) error {
			c, _, err := stream.DecodeExit(f.Data)
			if err != nil {
				return err
			}
			code = int(c)
			return errDone
		},
		stream.Error: func(f stream.Frame) error {
			remote = errors.New(string(f.Data))
			return errDone
		},
	})
	if remote != nil {
		return 0, remote
	}
	if code < 0 {
		if err == nil || errors.Is(err, errDone) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("%w: %w", errStreamEnded, err)
	}
	return code, nil
}

func newSSHCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "Open an ssh session to a running VM (system ssh, banger's key, pinned host key)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 1 || (dash < 0 && len(args) > 1) {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("put the remote command after --: banger vm ssh NAME -- CMD")}
			}
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			info, err := c.VMSSH(ctx, args[0])
			if err != nil {
				return err
			}
			sshArgs := append([]string{}, info.Args...)
			if len(args) > 1 {
				sshArgs = append(sshArgs, "--")
				sshArgs = append(sshArgs, args[1:]...)
			}
			ssh := exec.CommandContext(ctx, "ssh", sshArgs...)
			ssh.Stdin, ssh.Stdout, ssh.Stderr = a.streams.In, a.streams.Out, a.streams.ErrOut
			// ssh owns the terminal; the signal reaches it directly.
			signal.Ignore(syscall.SIGINT)
			runErr := ssh.Run()
			signal.Reset(syscall.SIGINT)
			if vm, err := c.GetVM(context.WithoutCancel(ctx), info.Name); err == nil && vm.State == "running" {
				fmt.Fprintf(a.streams.ErrOut, "vm %s is still running: banger vm stop %s  |  banger vm delete %s\n", vm.Name, vm.Name, vm.Name)
			}
			var ee *exec.ExitError
			if errors.As(runErr, &ee) {
				return &exitError{code: ee.ExitCode()}
			}
			if runErr != nil {
				return fmt.Errorf("run ssh: %w", runErr)
			}
			return nil
		},
	}
}

// splitRemote parses "NAME:/path"; ok is false for a local path.
func splitRemote(s string) (vm, path string, ok bool) {
	i := strings.Index(s, ":")
	if i <= 0 || strings.ContainsRune(s[:i], '/') {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

func newCpCmd(a *app) *cobra.Command {
	var maxSize string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files between the host and a VM (NAME:/path on one side; directories recursive, modes kept)",
		Long: `Copy files between the host and a VM. Exactly one of SRC and DST is
NAME:/path (absolute in the guest); directories are copied recursively with
their modes.

A copy from a guest is treated as hostile: it writes only the named entry
below DST (nothing beside it), never set-id or sticky bits, never through a
symlink, and keeps a symlink only when it points inside the copied tree
(others, and devices or fifos, are skipped with a warning). --max-size and
--timeout bound it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcVM, src, srcRemote := splitRemote(args[0])
			dstVM, dst, dstRemote := splitRemote(args[1])
			if srcRemote == dstRemote {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("exactly one of SRC and DST must be NAME:/path")}
			}
			limit, err := units.ParseSize(maxSize)
			if err != nil || limit <= 0 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--max-size %q: want a positive size such as 512M or 2G", maxSize)}
			}
			if timeout <= 0 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--timeout %s: want a positive duration such as 10m", timeout)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			if dstRemote {
				if !filepath.IsAbs(dst) {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("guest path %q must be absolute", dst)}
				}
				pr, pw := io.Pipe()
				go func() { pw.CloseWithError(tarfs.Write(pw, src, true)) }()
				err := c.UploadFiles(ctx, dstVM, dst, pr)
				pr.Close()
				return err
			}
			if !filepath.IsAbs(src) {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("guest path %q must be absolute", src)}
			}
			entry := path.Base(path.Clean(src))
			if entry == "/" {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("copy a directory below / from a guest, not / itself")}
			}
			body, err := c.DownloadFiles(ctx, srcVM, src)
			if err != nil {
				return err
			}
			defer body.Close()
			err = tarfs.ExtractUntrusted(dst, body, tarfs.Limits{
				Entry:    entry,
				MaxBytes: limit,
				Warn:     func(msg string) { fmt.Fprintf(a.streams.ErrOut, "warning: %s\n", msg) },
			})
			switch {
			case errors.Is(err, tarfs.ErrTooLarge):
				return fmt.Errorf("copy from %s: %w (raise --max-size to copy more)", srcVM, err)
			case ctx.Err() != nil && err != nil:
				return fmt.Errorf("copy from %s: not finished within --timeout %s: %w", srcVM, timeout, err)
			case err != nil:
				return fmt.Errorf("copy from %s: %w", srcVM, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&maxSize, "max-size", "1G", "most file data a copy from a guest may write")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up a copy that takes longer")
	return cmd
}

func newPortsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "ports NAME",
		Short: "List the listening TCP and UDP sockets in a running VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ports, err := c.VMPorts(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, ports)
			}
			tw := tabwriter.NewWriter(a.streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROTO\tADDRESS\tPORT\tPID\tPROCESS")
			for _, p := range ports {
				// The guest names its own processes and addresses.
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", termsafe.Line(p.Proto), termsafe.Line(p.Address), p.Port, p.PID, termsafe.Line(p.Process))
			}
			return tw.Flush()
		},
	}
}

func newHealthCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "health NAME",
		Short: "Ask a VM's guest agent how the guest is doing",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			h, err := c.VMHealth(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, h)
			}
			// Every string of the answer is the guest's.
			return printFields(a.streams.Out, [][2]string{
				{"agent", termsafe.Line(h.AgentVersion)},
				{"hostname", termsafe.Line(h.Hostname)},
				{"boot id", termsafe.Line(h.BootID)},
				{"uptime", fmt.Sprintf("%.0fs", h.Uptime)},
				{"load", fmt.Sprint(h.Load)},
				{"systemd", termsafe.Line(h.Systemd)},
				{"multi-user", fmt.Sprint(h.MultiUser)},
			})
		},
	}
}

func newLogsCmd(a *app) *cobra.Command {
	var follow, raw bool
	cmd := &cobra.Command{
		Use:   "logs NAME [--follow]",
		Short: "Print a VM's guest console log",
		Long: `Print a VM's guest console log. The guest writes it, so escape sequences and
control characters are removed before they reach your terminal; --raw prints
the bytes as they are.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.printStream(cmd.Context(), raw, func(c *api.Client) (io.ReadCloser, error) {
				return c.VMLogs(cmd.Context(), args[0], follow)
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the guest's bytes unfiltered (escape sequences included)")
	return cmd
}

// printStream copies a streamed response (logs, optionally followed) to
// stdout, without escape sequences and control characters unless raw;
// Ctrl-C ends it without an error.
func (a *app) printStream(ctx context.Context, raw bool, open func(*api.Client) (io.ReadCloser, error)) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	body, err := open(c)
	if err != nil {
		return err
	}
	defer body.Close()
	out := a.streams.Out
	if !raw {
		out = termsafe.Writer(out)
	}
	_, err = io.Copy(out, body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
