package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"

	"banger/internal/agent/agentmux"
	"banger/internal/agent/agentserver"
	"banger/internal/guestcontract"
	"banger/internal/wait"
)

// pollInterval is how often the transports look for their device to
// appear (modules load and udev runs after the agent starts).
const pollInterval = 250 * time.Millisecond

// waitFor polls every pollInterval until cond is true or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	return wait.Until(ctx, pollInterval, func() (bool, error) { return cond(), nil })
}

// ServeVsock waits for /dev/vsock, listens on the agent's vsock port and
// serves srv until ctx ends. It never listens on any network interface.
func ServeVsock(ctx context.Context, srv *agentserver.Server, port uint32, log *slog.Logger) error {
	if err := waitFor(ctx, func() bool { _, err := os.Stat("/dev/vsock"); return err == nil }); err != nil {
		return nil
	}
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	log.Info("serving on vsock", "port", port)
	return srv.Serve(ctx, l)
}

// FindSerialPort returns the device of the virtio-serial port named name:
// /dev/virtio-ports/<name> (a udev symlink) or, without udev, the
// /dev/vportNpM whose /sys/class/virtio-ports entry carries the name.
// It returns "" when the port does not exist (yet).
func FindSerialPort(name string) string {
	p := filepath.Join(guestcontract.VirtioPortsDir, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	entries, _ := os.ReadDir("/sys/class/virtio-ports")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			dev := filepath.Join("/dev", e.Name())
			if _, err := os.Stat(dev); err == nil {
				return dev
			}
		}
	}
	return ""
}

// ServeSerial serves srv over yamux sessions on the virtio-serial port
// named name until ctx ends: it waits for the port to appear, opens it
// and runs a yamux server session on it; when the host side disconnects
// (reads return EOF) it reopens the port and starts a new session.
func ServeSerial(ctx context.Context, srv *agentserver.Server, name string, log *slog.Logger) error {
	var dev string
	if err := waitFor(ctx, func() bool { dev = FindSerialPort(name); return dev != "" }); err != nil {
		return nil
	}
	reset := !firstServer(servedMarker)
	log.Info("serving on virtio-serial", "port", dev, "reset_host", reset)
	return ServeSessions(ctx, srv, func() (io.ReadWriteCloser, error) {
		return os.OpenFile(dev, os.O_RDWR, 0)
	}, reset, log)
}

// servedMarker is created by the first agent process of a boot that
// serves the virtio-serial port; a later one (the unit restarted, the
// agent crashed) finds it there. /run is a tmpfs, so the marker lives as
// long as the boot (and is in a restored guest's memory with the agent
// that made it).
const servedMarker = "/run/banger/agent-served"

// firstServer reports whether no agent process served before in this
// boot, and marks that one does now. When the marker cannot be made it
// answers true: a missed reset costs less than one sent to a fresh host.
func firstServer(marker string) bool {
	if err := os.MkdirAll(filepath.Dir(marker), 0o755); err != nil {
		return true
	}
	f, err := os.OpenFile(marker, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return !errors.Is(err, fs.ErrExist)
	}
	f.Close()
	return true
}

// resetFrame is a yamux GoAway frame with the internal-error code
// (version 0, type 3, no flags, stream 0, code 2 in the length field).
// It ends the peer's session at once, with every stream on it.
var resetFrame = []byte{0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}

// resetWait bounds the write of resetFrame: a port whose host is not
// connected blocks writes, and then there is no stale session to end.
const resetWait = 100 * time.Millisecond

// resetHost ends the session the host may still hold with an agent
// process that is gone. yamux drops frames for streams it does not know
// without answering, so without this a host request in flight when the
// agent died (a long exec, an attach) would wait forever on a session
// the new agent answers keepalives on.
func resetHost(port io.Writer) error {
	if d, ok := port.(interface{ SetWriteDeadline(time.Time) error }); ok {
		if d.SetWriteDeadline(time.Now().Add(resetWait)) == nil {
			defer d.SetWriteDeadline(time.Time{})
		}
	}
	_, err := port.Write(resetFrame)
	return err
}

// ServeSessions runs one yamux server session at a time over the byte
// streams open returns, serving srv on each, until ctx ends. A session
// that ends (EOF, protocol error) is followed by a new open after a short
// pause.
//
// With reset, the first session begins by ending the host's session with
// an earlier agent process (resetHost).
func ServeSessions(ctx context.Context, srv *agentserver.Server, open func() (io.ReadWriteCloser, error), reset bool, log *slog.Logger) error {
	var delay reopenDelay
	for ctx.Err() == nil {
		heard, err := serveOneSession(ctx, srv, open, reset, log)
		reset = false
		if err != nil {
			log.Debug("serial session ended", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay.next(heard)):
		}
	}
	return nil
}

// minReopen is the shortest pause between two opens of the agent port.
const minReopen = 10 * time.Millisecond

// reopenDelay paces the opens of the agent port. A virtio-serial port
// cannot be waited on for a host to connect: with none, a read returns
// EOF at once, so the guest polls by opening the port again. Right after
// a session that heard from its host the pause is short (minReopen): a
// host hangs up before a save and the guest restored from it resumes
// inside this pause, and a restarted daemon reconnects within
// milliseconds. While sessions end unheard (no host connected) the pause
// doubles up to pollInterval, so an idle guest does not spin.
type reopenDelay struct{ d time.Duration }

// next returns the pause after a session; heard reports whether it read
// anything from the host.
func (r *reopenDelay) next(heard bool) time.Duration {
	if heard || r.d == 0 {
		r.d = minReopen
	} else {
		r.d = min(2*r.d, pollInterval)
	}
	return r.d
}

// heardPort is the agent port, noting whether anything was read from it.
type heardPort struct {
	io.ReadWriteCloser
	heard atomic.Bool
}

func (p *heardPort) Read(b []byte) (int, error) {
	n, err := p.ReadWriteCloser.Read(b)
	if n > 0 {
		p.heard.Store(true)
	}
	return n, err
}

// serveOneSession opens the port and serves one yamux session on it until
// the host goes away (EOF) or ctx ends. heard reports whether the host
// sent anything.
func serveOneSession(ctx context.Context, srv *agentserver.Server, open func() (io.ReadWriteCloser, error), reset bool, log *slog.Logger) (bool, error) {
	rwc, err := open()
	if err != nil {
		return false, fmt.Errorf("open serial port: %w", err)
	}
	if reset {
		if err := resetHost(rwc); err != nil {
			log.Debug("no host session to reset", "err", err)
		} else {
			log.Info("ended the host's session with the previous agent")
		}
	}
	port := &heardPort{ReadWriteCloser: rwc}
	sess, err := yamux.Server(port, agentmux.GuestConfig())
	if err != nil {
		port.Close()
		return false, fmt.Errorf("start yamux session: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	err = srv.Serve(ctx, sess)
	sess.Close()
	port.Close()
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return port.heard.Load(), err
}
