// Package cmdrun runs external commands (e2fsprogs, nft, sudo, tar,
// mmdebstrap, podman, ssh-keygen) the one way banger runs them: argv,
// never a shell string, and a failure returned as an *Error that keeps
// the argv and the tail of the output, so the message says what ran and
// why it failed. Standard library only.
package cmdrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxOutput is how many trailing bytes of a failed command's output an
// Error keeps: enough for the complaint a tool prints before it exits,
// bounded so a chatty build cannot grow an error without limit.
const MaxOutput = 4 << 10

// Error is a command that could not start or did not succeed.
type Error struct {
	// Argv is the command as run.
	Argv []string
	// Output is the tail of its combined stdout and stderr, at most
	// MaxOutput bytes, starting at a line boundary when it was cut.
	Output []byte
	// Truncated says earlier output was dropped.
	Truncated bool
	// Err is why it failed: the start error, an *exec.ExitError, and
	// the context's error when the command was cancelled.
	Err error
}

// Error renders the argv, the failure and the trimmed output tail (on
// its own lines when it has several).
func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Argv, " "), e.Err)
	out := strings.TrimSpace(string(e.Output))
	switch {
	case out == "":
		return msg
	case e.Truncated:
		return msg + ":\n...\n" + out
	case strings.Contains(out, "\n"):
		return msg + ":\n" + out
	}
	return msg + ": " + out
}

// Unwrap returns Err, so errors.Is and errors.As reach the exit error
// and context.Canceled.
func (e *Error) Unwrap() error { return e.Err }

// ExitCode is the command's exit status, or -1 when it did not exit on
// its own (not started, or killed by a signal).
func (e *Error) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Cmd is one command and how to run it. The zero value of every field
// but Argv means "as the calling process".
type Cmd struct {
	// Argv is the program and its arguments; Argv[0] is looked up in PATH.
	Argv []string
	// Env is added to the calling process's environment.
	Env []string
	// Dir is the working directory.
	Dir string
	// Stdin feeds the command's standard input.
	Stdin io.Reader
	// Log also receives the combined output as it is written.
	Log io.Writer
	// KillGrace, when set, runs the command in its own process group;
	// cancelling ctx sends SIGTERM to the group (so a tool like
	// mmdebstrap can undo its mounts) and SIGKILL after KillGrace if it
	// is still running. Unset, cancelling ctx kills the command at once.
	KillGrace time.Duration
}

// Run runs argv; a failure is an *Error.
func Run(ctx context.Context, argv ...string) error {
	return Cmd{Argv: argv}.Run(ctx)
}

// Output runs argv and returns its combined stdout and stderr; a failure
// is an *Error.
func Output(ctx context.Context, argv ...string) ([]byte, error) {
	return Cmd{Argv: argv}.Output(ctx)
}

// Run runs c, keeping only the output tail an error needs; a failure is
// an *Error.
func (c Cmd) Run(ctx context.Context) error {
	return c.run(ctx, nil)
}

// Output runs c and returns its whole combined stdout and stderr; a
// failure is an *Error (and the output so far).
func (c Cmd) Output(ctx context.Context) ([]byte, error) {
	var all bytes.Buffer
	err := c.run(ctx, &all)
	return all.Bytes(), err
}

// Stdout runs c and returns its whole standard output, which then is
// data (a hash, a path, a listing); only standard error goes into the
// output tail of a failure's *Error.
func (c Cmd) Stdout(ctx context.Context) ([]byte, error) {
	var out bytes.Buffer
	err := c.runTo(ctx, nil, &out)
	return out.Bytes(), err
}

func (c Cmd) run(ctx context.Context, all *bytes.Buffer) error {
	return c.runTo(ctx, all, nil)
}

// runTo runs c. Both streams go to the error tail, all and Log, except
// that when stdout is set, standard output goes there alone.
func (c Cmd) runTo(ctx context.Context, all *bytes.Buffer, stdout io.Writer) error {
	if len(c.Argv) == 0 {
		return &Error{Err: errors.New("empty argv")}
	}
	if err := ctx.Err(); err != nil {
		return &Error{Argv: c.Argv, Err: err}
	}
	t := &tail{}
	ws := []io.Writer{t}
	if all != nil {
		ws = append(ws, all)
	}
	if c.Log != nil {
		ws = append(ws, c.Log)
	}
	// One writer value for both streams: exec then never calls it from
	// two goroutines at once.
	w := io.MultiWriter(ws...)
	cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.Dir = c.Stdin, w, w, c.Dir
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if c.Env != nil {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	if c.KillGrace > 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		return &Error{Argv: c.Argv, Err: err}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		if c.KillGrace <= 0 {
			_ = cmd.Process.Kill()
			return
		}
		// The negative PID names the process group the child leads.
		pid := cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		timer := time.NewTimer(c.KillGrace)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
	err := cmd.Wait()
	close(done)
	<-stopped
	if err == nil && ctx.Err() == nil {
		return nil
	}
	if ctx.Err() != nil {
		if err == nil {
			err = ctx.Err()
		} else {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
	}
	out, cut := t.bytes()
	return &Error{Argv: c.Argv, Output: out, Truncated: cut, Err: err}
}

// tail keeps the last MaxOutput bytes written to it.
type tail struct {
	mu   sync.Mutex
	buf  []byte
	seen int64
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seen += int64(len(p))
	if len(p) >= MaxOutput {
		t.buf = append(t.buf[:0], p[len(p)-MaxOutput:]...)
		return len(p), nil
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*MaxOutput {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-MaxOutput:]...)
	}
	return len(p), nil
}

// bytes returns the kept tail, cut to start at a line when earlier
// output was dropped, and whether it was.
func (t *tail) bytes() ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > MaxOutput {
		b = b[len(b)-MaxOutput:]
	}
	cut := t.seen > int64(len(b))
	if cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return bytes.Clone(b), cut
}
