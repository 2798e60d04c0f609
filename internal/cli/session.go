package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/api"
	"banger/internal/stream"
)

// DefaultDetachKeys is the key sequence that detaches `session attach`
// and leaves the session running.
const DefaultDetachKeys = "ctrl-p,ctrl-q"

// defaultReplay is how much earlier output attach shows first.
const defaultReplay = 64 << 10

func newSessionCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Run long-lived commands in a VM and attach to them",
		Long: "A session is a command the guest agent runs detached from any connection: start it,\n" +
			"attach and detach as often as you like, read its output, stop it. Sessions survive\n" +
			"a restart of bangerd.",
		Args: noArgs,
	}
	cmd.AddCommand(newSessionStartCmd(a), newSessionListCmd(a), newSessionAttachCmd(a),
		newSessionLogsCmd(a), newSessionStopCmd(a), newSessionRmCmd(a))
	return cmd
}

func newSessionStartCmd(a *app) *cobra.Command {
	var (
		name, cwd string
		env       []string
		pty       bool
	)
	cmd := &cobra.Command{
		Use:   "start NAME [--name S] [--cwd DIR] [--env K=V]... [--pty] -- CMD [ARGS...]",
		Short: "Start a long-lived command in a running VM",
		Long: "Start CMD under the guest agent, detached from this terminal. The working directory\n" +
			"and the command are checked in the guest first. Attach with `banger vm session attach`.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("put the command after --: banger vm session start NAME -- CMD")}
			}
			for _, kv := range env {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--env %q: want KEY=VALUE", kv)}
				}
			}
			req := api.StartSessionRequest{Name: name, Argv: args[1:], Cwd: cwd, Env: env, PTY: pty}
			if pty {
				if f, ok := a.streams.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					if cols, rows, err := term.GetSize(int(f.Fd())); err == nil {
						req.Cols, req.Rows = uint16(cols), uint16(rows)
					}
				}
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			s, err := c.StartSession(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, s)
			}
			fmt.Fprintln(a.streams.Out, s.Name)
			fmt.Fprintf(a.streams.ErrOut, "session %s running (pid %d in the guest)\n  banger vm session attach %s %s\n  banger vm session logs %s %s\n  banger vm session stop %s %s\n",
				s.Name, s.PID, args[0], s.Name, args[0], s.Name, args[0], s.Name)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "session name (generated when empty)")
	fl.StringVar(&cwd, "cwd", "", "working directory in the guest (default /root)")
	fl.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE), repeatable; only names are recorded")
	fl.BoolVar(&pty, "pty", false, "run the command on a terminal (attach then uses raw mode)")
	return cmd
}

func newSessionListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list NAME",
		Aliases: []string{"ls"},
		Short:   "List a VM's sessions",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			list, err := c.Sessions(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, list)
			}
			return writeSessionTable(a.streams.Out, list, time.Now())
		},
	}
}

// writeSessionTable renders sessions as a table.
func writeSessionTable(w io.Writer, list []api.Session, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tSTARTED\tEXIT\tCOMMAND")
	for _, s := range list {
		pid := "-"
		if s.PID > 0 && s.State == api.SessionRunning {
			pid = fmt.Sprint(s.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.State, pid, age(s.StartedAt, now)+" ago", exitText(s), commandText(s.Command))
	}
	return tw.Flush()
}

func exitText(s api.Session) string {
	switch {
	case s.ExitCode == nil:
		return "-"
	case s.Signal != "":
		return fmt.Sprintf("%d (%s)", *s.ExitCode, s.Signal)
	}
	return fmt.Sprint(*s.ExitCode)
}

// commandText joins argv for a table cell, bounded.
func commandText(argv []string) string {
	s := strings.Join(argv, " ")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func newSessionAttachCmd(a *app) *cobra.Command {
	var (
		replay     int64
		detachKeys string
	)
	cmd := &cobra.Command{
		Use:   "attach NAME SESSION",
		Short: "Attach to a session; the detach keys (default Ctrl-P Ctrl-Q) leave it running",
		Long: "Attach your terminal to a session: its recent output first, then live output; your\n" +
			"input goes to it. A --pty session puts your terminal in raw mode and follows its size.\n" +
			"Type the detach keys (default ctrl-p,ctrl-q; --detach-keys \"\" disables them), or send\n" +
			"Ctrl-C in pipe mode, to detach: the session keeps running. When the session exits,\n" +
			"attach exits with its status.",
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := parseDetachKeys(detachKeys)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			code, detached, err := a.attachSession(cmd.Context(), c, args[0], args[1], replay, keys)
			if err != nil {
				return err
			}
			if detached {
				fmt.Fprintf(a.streams.ErrOut, "detached from session %s; it keeps running (banger vm session attach %s %s)\n", args[1], args[0], args[1])
				return nil
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().Int64Var(&replay, "replay", defaultReplay, "bytes of earlier output to show first")
	cmd.Flags().StringVar(&detachKeys, "detach-keys", DefaultDetachKeys, "key sequence that detaches, e.g. ctrl-] or ctrl-p,ctrl-q")
	return cmd
}

// attachSession attaches the caller's stdio to a session. It returns the
// session's exit code when it ended, or detached when the user left it.
func (a *app) attachSession(ctx context.Context, c *api.Client, vm, name string, replay int64, keys []byte) (int, bool, error) {
	s, err := c.Session(ctx, vm, name)
	if err != nil {
		return 0, false, err
	}
	in := a.streams.In
	inFile, isFile := in.(*os.File)
	raw := s.PTY && isFile && term.IsTerminal(int(inFile.Fd()))
	conn, err := c.AttachSession(ctx, vm, name, replay)
	if err != nil {
		return 0, false, err
	}
	defer conn.Close()
	sc := stream.NewConn(conn)

	// finished ends the helper goroutines when attach returns; detached
	// is closed when the user detached (and the stream was closed).
	finished, detached := make(chan struct{}), make(chan struct{})
	defer close(finished)
	detachCh := make(chan struct{}, 1)
	requestDetach := func() {
		select {
		case detachCh <- struct{}{}:
		default:
		}
	}
	go func() {
		select {
		case <-detachCh:
			close(detached)
			conn.Close()
		case <-finished:
		}
	}()
	if raw {
		old, err := term.MakeRaw(int(inFile.Fd()))
		if err != nil {
			return 0, false, fmt.Errorf("raw terminal: %w", err)
		}
		defer term.Restore(int(inFile.Fd()), old)
		if cols, rows, err := term.GetSize(int(inFile.Fd())); err == nil {
			_ = sc.WriteFrame(stream.Resize, stream.EncodeResize(uint16(cols), uint16(rows)))
		}
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
	}
	// Signals to banger detach; they never reach the session (use
	// `session stop --signal` for that).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			requestDetach()
		case <-finished:
		}
	}()
	go func() {
		if in != nil {
			r := &detachReader{r: in, f: detachFilter{seq: keys}, onDetach: requestDetach}
			if _, err := sc.Pump(stream.Stdin, r); err != nil {
				return
			}
		}
		_ = sc.WriteFrame(stream.StdinEOF, nil)
	}()
	code, err := a.demuxStdio(sc)
	if raw {
		fmt.Fprint(a.streams.ErrOut, "\r\n")
	}
	select {
	case <-detached:
		return 0, true, nil
	default:
	}
	if err != nil {
		return 0, false, fmt.Errorf("attach: %w", err)
	}
	return code, false, nil
}

// detachReader passes input through a detachFilter and ends (EOF) after
// calling onDetach when the sequence was typed.
type detachReader struct {
	r        io.Reader
	f        detachFilter
	onDetach func()
	pending  []byte
	done     bool
}

func (d *detachReader) Read(p []byte) (int, error) {
	for {
		if len(d.pending) > 0 {
			n := copy(p, d.pending)
			d.pending = d.pending[n:]
			return n, nil
		}
		if d.done {
			return 0, io.EOF
		}
		buf := make([]byte, len(p))
		n, err := d.r.Read(buf)
		out, detach := d.f.Feed(buf[:n])
		d.pending = out
		if detach {
			d.done = true
			d.onDetach()
		}
		if err != nil {
			// Held-back bytes of an incomplete sequence are input too.
			d.pending = append(d.pending, d.f.Flush()...)
			d.done = true
			if len(d.pending) == 0 {
				return 0, err
			}
		}
	}
}

// detachFilter finds a key sequence in an input stream. Bytes that may be
// the start of the sequence are held back until it is clear they are not.
type detachFilter struct {
	seq  []byte
	held []byte
}

// Feed consumes p and returns the bytes to forward; detach is true when
// the sequence completed (bytes after it in p are dropped).
func (f *detachFilter) Feed(p []byte) (out []byte, detach bool) {
	if len(f.seq) == 0 {
		return append([]byte(nil), p...), false
	}
	for _, b := range p {
		f.held = append(f.held, b)
		for len(f.held) > 0 && !bytes.HasPrefix(f.seq, f.held) {
			out = append(out, f.held[0])
			f.held = f.held[1:]
		}
		if len(f.held) == len(f.seq) {
			f.held = nil
			return out, true
		}
	}
	return out, false
}

// Flush returns the held-back bytes (at the end of input).
func (f *detachFilter) Flush() []byte {
	h := f.held
	f.held = nil
	return h
}

// parseDetachKeys parses a comma-separated key sequence: "ctrl-X" for a
// letter or one of @[\]^_, or a single character. "" disables detaching.
func parseDetachKeys(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	var out []byte
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		lower := strings.ToLower(k)
		switch {
		case strings.HasPrefix(lower, "ctrl-") && len(k) == 6:
			c := k[5]
			switch {
			case c >= 'a' && c <= 'z':
				out = append(out, c-'a'+1)
			case c >= 'A' && c <= 'Z':
				out = append(out, c-'A'+1)
			case strings.IndexByte("@[\\]^_", c) >= 0:
				out = append(out, c-'@')
			default:
				return nil, fmt.Errorf("detach key %q: want ctrl- followed by a letter or one of @[\\]^_", k)
			}
		case len(k) == 1 && k[0] > ' ' && k[0] < 0x7f:
			out = append(out, k[0])
		default:
			return nil, fmt.Errorf("detach key %q: want ctrl-X or a single character", k)
		}
	}
	return out, nil
}

func newSessionLogsCmd(a *app) *cobra.Command {
	var follow, raw bool
	cmd := &cobra.Command{
		Use:   "logs NAME SESSION [--follow]",
		Short: "Print a session's output (kept in the guest, bounded and rotated)",
		Long: `Print a session's output, kept in the guest (bounded and rotated). The guest
sends it, so escape sequences and control characters are removed unless
--raw; attach to see a terminal program as it draws itself.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.printStream(cmd.Context(), raw, func(c *api.Client) (io.ReadCloser, error) {
				return c.SessionLogs(cmd.Context(), args[0], args[1], follow)
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing output until the session ends")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the guest's bytes unfiltered (escape sequences included)")
	return cmd
}

func newSessionStopCmd(a *app) *cobra.Command {
	var (
		sig  string
		wait int
	)
	cmd := &cobra.Command{
		Use:   "stop NAME SESSION [--signal SIG]",
		Short: "Signal a session (TERM by default) and wait for it to exit",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			s, err := c.StopSession(cmd.Context(), args[0], args[1], api.StopSessionRequest{Signal: strings.TrimPrefix(strings.ToUpper(sig), "SIG"), WaitSeconds: wait})
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, s)
			}
			if s.State == api.SessionRunning {
				return fmt.Errorf("session %s still running %ds after SIG%s (try --signal KILL)", s.Name, wait, strings.TrimPrefix(strings.ToUpper(sig), "SIG"))
			}
			fmt.Fprintf(a.streams.Out, "session %s %s, exit %s\n", s.Name, s.State, exitText(s))
			return nil
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "TERM", "signal to send (TERM, INT, KILL, HUP, a number)")
	cmd.Flags().IntVar(&wait, "wait", 10, "seconds to wait for the session to exit")
	return cmd
}

func newSessionRmCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME SESSION",
		Short: "Forget an ended session and delete its log",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			return c.RemoveSession(cmd.Context(), args[0], args[1])
		},
	}
}
