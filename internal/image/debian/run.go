package debian

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tailLines is how many of a failed command's last output lines an error
// carries.
const tailLines = 15

// tail keeps the last lines written to it.
type tail struct {
	mu      sync.Mutex
	lines   []string
	partial []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.add(string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
	return len(p), nil
}

func (t *tail) add(line string) {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

// String returns the kept lines, the unterminated last one included.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.partial) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(t.partial))
	}
	return strings.Join(lines, "\n")
}

// CommandError is a failed external command: its argv and the last lines
// of its output.
type CommandError struct {
	Args []string
	Tail string
	Err  error
}

// Error renders the command, its error and its last output lines.
func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Tail != "" {
		msg += ":\n" + e.Tail
	}
	return msg
}

// Unwrap returns the underlying exec error.
func (e *CommandError) Unwrap() error { return e.Err }

// Run runs argv with its output copied to log, in its own process group,
// and returns a *CommandError carrying the last output lines when it
// fails. Cancelling ctx sends SIGTERM to the group (so a tool like
// mmdebstrap can undo its mounts) and SIGKILL to it after killGrace if it
// is still running; the group is addressed by the child's PID.
func Run(ctx context.Context, log io.Writer, argv ...string) error {
	return runCmd(ctx, log, nil, nil, argv...)
}

// RunIn is Run with stdin connected to in.
func RunIn(ctx context.Context, log io.Writer, in io.Reader, argv ...string) error {
	return runCmd(ctx, log, in, nil, argv...)
}

// runEnv is Run with extra environment variables.
func runEnv(ctx context.Context, log io.Writer, env []string, argv ...string) error {
	return runCmd(ctx, log, nil, env, argv...)
}

// killGrace is how long a cancelled command gets between SIGTERM and
// SIGKILL.
const killGrace = 15 * time.Second

func runCmd(ctx context.Context, log io.Writer, in io.Reader, env []string, argv ...string) error {
	if log == nil {
		log = io.Discard
	}
	fmt.Fprintf(log, "+ %s\n", strings.Join(argv, " "))
	t := &tail{}
	w := io.MultiWriter(log, t)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = in
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.Env = append(append(os.Environ(), "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return &CommandError{Args: argv, Err: err}
	}
	pid := cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		// The negative PID names the process group the child leads.
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(killGrace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
	err := cmd.Wait()
	close(done)
	if err == nil && ctx.Err() == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return &CommandError{Args: argv, Tail: t.String(), Err: err}
}
