package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
)

// serialPort is the guest's end of a virtio-serial port, opened for one
// host connection. WaitHost blocks until a host is connected to the other
// end, so that a session is only started when there is somebody to talk
// to: reading a port with no host connected returns EOF at once.
type serialPort struct {
	*os.File
	sigio <-chan os.Signal
}

// openSerialPort opens dev for one session. sigio receives SIGIO (see
// ServeSerial).
func openSerialPort(dev string, sigio <-chan os.Signal) (*serialPort, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &serialPort{File: f, sigio: sigio}, nil
}

// WaitHost returns once a host is connected to the port, or when ctx ends.
//
// Linux's virtio_console reports "no host" as POLLHUP and, for a file
// with O_ASYNC set, sends SIGIO when the host connects (a
// VIRTIO_CONSOLE_PORT_OPEN from the device). Waiting for that signal lets
// a guest restored from a snapshot answer the moment its new host
// connects, where polling cost up to the whole poll interval (a quarter
// of a second) on every warm start. The interval stays as a fallback for
// a kernel that sends no signal. O_ASYNC is cleared again before the
// session starts: the driver also signals every arriving buffer.
func (p *serialPort) WaitHost(ctx context.Context) error {
	rc, err := p.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	cerr := rc.Control(func(fd uintptr) {
		if err := setAsync(fd, true); err != nil {
			werr = fmt.Errorf("ask for SIGIO on the agent port: %w", err)
			return
		}
		defer setAsync(fd, false) //nolint:errcheck // best effort: only costs signals
		for {
			connected, err := hostConnected(fd)
			if err != nil || connected {
				werr = err
				return
			}
			select {
			case <-ctx.Done():
				werr = ctx.Err()
				return
			case <-p.sigio:
			case <-time.After(pollInterval):
			}
		}
	})
	return errors.Join(cerr, werr)
}

// hostConnected reports whether a host is connected to the virtio-serial
// port fd: the driver sets POLLHUP while none is.
func hostConnected(fd uintptr) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll the agent port: %w", err)
		}
		return fds[0].Revents&unix.POLLHUP == 0, nil
	}
}

// setAsync turns signal-driven I/O on fd on or off, with this process
// as the owner the SIGIO goes to.
func setAsync(fd uintptr, on bool) error {
	if on {
		if _, err := unix.FcntlInt(fd, unix.F_SETOWN, os.Getpid()); err != nil {
			return err
		}
	}
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		flags |= unix.O_ASYNC
	} else {
		flags &^= unix.O_ASYNC
	}
	_, err = unix.FcntlInt(fd, unix.F_SETFL, flags)
	return err
}

// notifySIGIO routes SIGIO to a channel. Go ignores a SIGIO nobody asked
// for, so this only has to be called before the first WaitHost.
func notifySIGIO() <-chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, unix.SIGIO)
	return c
}
