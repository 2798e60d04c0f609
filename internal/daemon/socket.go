package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/wait"
)

// Socket claiming budgets.
const (
	probeTimeout = time.Second
	// lockWait covers a daemon being replaced: it holds the lock until its
	// shutdown (operation rollback included) is done.
	lockWait     = 15 * time.Second
	lockPoll     = 50 * time.Millisecond
	socketMode   = 0o600
	lockFileMode = 0o600
)

// socket is the daemon's claim on its unix socket: the listener and an
// exclusive flock on "<socket>.lock" held for the daemon's life, so two
// daemons never serve the same path.
type socket struct {
	path string
	ln   *net.UnixListener
	lock *os.File
}

// claimSocket makes path this daemon's socket. A daemon answering on path
// is an error naming its pid. A socket file nobody answers on is stale
// (its daemon was killed) and is replaced.
func claimSocket(ctx context.Context, path string, logger *slog.Logger) (*socket, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := refuseLive(ctx, path); err != nil {
		return nil, err
	}
	lock, err := lockFile(ctx, path+".lock")
	if err != nil {
		return nil, err
	}
	s := &socket{path: path, lock: lock}
	// Checked again under the lock: a daemon may have won the race.
	if err := refuseLive(ctx, path); err != nil {
		s.release()
		return nil, err
	}
	switch fi, err := os.Lstat(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		s.release()
		return nil, fmt.Errorf("inspect socket %s: %w", path, err)
	case fi.Mode()&fs.ModeSocket == 0:
		s.release()
		return nil, fmt.Errorf("socket path %s exists and is not a socket; remove it or set BANGER_SOCKET", path)
	default:
		if err := os.Remove(path); err != nil {
			s.release()
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
		logger.Warn("removed stale socket", logKeySocket, path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		s.release()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	s.ln = ln
	if err := os.Chmod(path, socketMode); err != nil {
		s.release()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return s, nil
}

// refuseLive returns an error when a daemon answers on path.
func refuseLive(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c := &api.Client{Socket: path}
	v, err := c.Version(ctx)
	var de *api.DialError
	switch {
	case err == nil:
		return fmt.Errorf("bangerd is already running (pid %d, version %s) on %s; stop it with `banger daemon stop`", v.PID, v.Version, path)
	case errors.As(err, &de):
		return nil // nobody listens: absent or stale
	default:
		return fmt.Errorf("something already answers on %s (%v); stop it or set BANGER_SOCKET", path, err)
	}
}

// lockFile takes an exclusive flock on path, waiting up to lockWait for a
// daemon that is shutting down to let go.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, lockFileMode)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	wctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	err = wait.Until(wctx, lockPoll, func() (bool, error) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != nil && !errors.Is(err, unix.EWOULDBLOCK) {
			return false, fmt.Errorf("lock %s: %w", path, err)
		}
		return err == nil, nil
	})
	switch {
	case err == nil:
		return f, nil
	case ctx.Err() != nil:
		err = fmt.Errorf("lock %s: %w", path, ctx.Err())
	case wctx.Err() != nil:
		err = fmt.Errorf("lock %s: another bangerd holds it and did not exit within %s", path, lockWait)
	}
	f.Close()
	return nil, err
}

// release closes the listener (which removes the socket file) and drops
// the lock. It is idempotent.
func (s *socket) release() {
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}
