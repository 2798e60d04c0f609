package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/wait"
)

// EnvBangerdBin names the bangerd binary to start, overriding the lookup
// next to banger and on PATH.
const EnvBangerdBin = "BANGERD_BIN"

// Daemon start and replacement budgets.
const (
	probeTimeout     = 2 * time.Second
	startTimeout     = 30 * time.Second
	stopTimeout      = 90 * time.Second // the daemon rolls back running operations first
	pollInterval     = 25 * time.Millisecond
	startupLogTailKB = 8
)

// client returns a client for a running, current bangerd: it starts one
// when none answers, and replaces one whose build is older than this CLI
// (see package buildinfo for the rule).
func (a *app) client(ctx context.Context) (*api.Client, error) {
	if a.api != nil {
		return a.api, nil
	}
	if a.pathsErr != nil {
		return nil, a.pathsErr
	}
	c := &api.Client{Socket: a.paths.Socket}
	v, err := probe(ctx, c)
	var de *api.DialError
	switch {
	case err == nil:
		if !buildinfo.Older(v.BuildStamp, buildinfo.BuildStamp()) {
			a.api = c
			return c, nil
		}
		// Stopping a daemon rolls back its running operations: another
		// terminal's create or image build. A busy old daemon is used as
		// it is unless the user asked to wait for it.
		busy, err := a.waitIdle(ctx, c, v)
		if err != nil {
			return nil, fmt.Errorf("replace old bangerd: %w", err)
		}
		if busy > 0 {
			fmt.Fprintf(a.streams.ErrOut, "bangerd %s (pid %d) is older than this banger but runs %d operation(s); using it as it is (pass --replace-daemon to wait for them and replace it)\n", v.Version, v.PID, busy)
			a.api = c
			return c, nil
		}
		fmt.Fprintf(a.streams.ErrOut, "bangerd %s (pid %d) is older than this banger; restarting it\n", v.Version, v.PID)
		if err := stopDaemon(ctx, c, v.PID); err != nil {
			return nil, fmt.Errorf("replace old bangerd: %w", err)
		}
	case errors.As(err, &de):
	default:
		return nil, fmt.Errorf("handshake with bangerd at %s: %w", c.SocketPath(), err)
	}
	if err := a.startDaemon(ctx, c); err != nil {
		return nil, err
	}
	a.api = c
	return c, nil
}

// idlePoll is how often --replace-daemon asks a busy daemon whether its
// operations have finished.
const idlePoll = 500 * time.Millisecond

// waitIdle returns how many operations the daemon behind c runs. With
// --replace-daemon it first waits, saying so, until that is zero.
func (a *app) waitIdle(ctx context.Context, c *api.Client, v api.VersionInfo) (int, error) {
	said := false
	ops := 0
	err := wait.Until(ctx, idlePoll, func() (bool, error) {
		st, err := c.Status(ctx)
		if err != nil {
			return false, err
		}
		ops = st.Operations
		if ops == 0 || !a.replaceDaemon {
			return true, nil
		}
		if !said {
			fmt.Fprintf(a.streams.ErrOut, "waiting for %d operation(s) of bangerd %s (pid %d) to finish before replacing it\n", ops, v.Version, v.PID)
			said = true
		}
		return false, nil
	})
	if err != nil {
		return 0, err
	}
	return ops, nil
}

// runningClient returns a client when a daemon answers, without starting
// one; nil when none does.
func (a *app) runningClient(ctx context.Context) (*api.Client, *api.VersionInfo) {
	if a.pathsErr != nil {
		return nil, nil
	}
	c := &api.Client{Socket: a.paths.Socket}
	v, err := probe(ctx, c)
	if err != nil {
		return nil, nil
	}
	return c, &v
}

func probe(ctx context.Context, c *api.Client) (api.VersionInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return c.Version(ctx)
}

// stopDaemon asks the daemon to stop and waits until its socket no longer
// answers and its process pid is gone.
func stopDaemon(ctx context.Context, c *api.Client, pid int) error {
	if err := c.StopDaemon(ctx); err != nil {
		var de *api.DialError
		if errors.As(err, &de) {
			return nil // already gone
		}
		return fmt.Errorf("stop bangerd: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	err := wait.Until(wctx, pollInterval, func() (bool, error) {
		_, err := probe(wctx, c)
		var de *api.DialError
		return errors.As(err, &de) && !processAlive(pid), nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("bangerd (pid %d) did not exit within %s", pid, stopTimeout)
	}
	return err
}

// processAlive reports whether pid runs. A zombie (exited, not yet
// reaped by its parent) counts as gone.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// Fields after the parenthesised command name: state first.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}

// findBangerd locates the daemon binary: $BANGERD_BIN, else bangerd next
// to this executable, else bangerd on PATH.
func findBangerd() (string, error) {
	if p := os.Getenv(EnvBangerdBin); p != "" {
		return p, nil
	}
	var dir string
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			dir = filepath.Dir(exe)
			p := filepath.Join(dir, "bangerd")
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	p, err := exec.LookPath("bangerd")
	if err != nil {
		return "", fmt.Errorf("bangerd not found next to banger (%s) or on PATH; run `make build` or set %s", dir, EnvBangerdBin)
	}
	return p, nil
}

// startDaemon starts bangerd detached (own session, stdin from /dev/null,
// stdout and stderr appended to the daemon log) and waits until it
// answers on c. If it exits first, the error quotes what it printed.
func (a *app) startDaemon(ctx context.Context, c *api.Client) error {
	bin, err := findBangerd()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.paths.StateDir, 0o700); err != nil {
		return fmt.Errorf("start bangerd: %w", err)
	}
	logPath := a.paths.LogFile
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start bangerd: open log: %w", err)
	}
	offset, _ := logf.Seek(0, io.SeekEnd)
	var args []string
	if a.logLevel != "" {
		args = append(args, "--log-level", a.logLevel)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("start bangerd %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps the daemon if it exits while we live

	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	err = wait.Until(wctx, pollInterval, func() (bool, error) {
		if _, err := probe(wctx, c); err == nil {
			return true, nil
		}
		select {
		case werr := <-exited:
			// Another banger may have won the race to start the daemon.
			if _, err := probe(wctx, c); err == nil {
				return true, nil
			}
			return false, fmt.Errorf("bangerd exited during startup (%v): %s", werr, startupFailure(logPath, offset))
		default:
			return false, nil
		}
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("start bangerd: %w", ctx.Err())
	case wctx.Err() != nil:
		return fmt.Errorf("bangerd (pid %d) did not answer on %s within %s; see %s", cmd.Process.Pid, c.SocketPath(), startTimeout, logPath)
	}
	return err
}

// startupFailure returns the daemon's own error line ("bangerd: ...")
// written to the log since offset, or a pointer to the log.
func startupFailure(logPath string, offset int64) string {
	f, err := os.Open(logPath)
	if err != nil {
		return "see " + logPath
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "see " + logPath
	}
	b, _ := io.ReadAll(io.LimitReader(f, startupLogTailKB<<10))
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if msg, ok := strings.CutPrefix(string(lines[i]), "bangerd: "); ok {
			return msg
		}
	}
	return "see " + logPath
}
