package guest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Notify sends state (e.g. "READY=1") to systemd when the service runs
// under Type=notify (NOTIFY_SOCKET set); otherwise it does nothing.
func Notify(state string) error {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	return sendNotify(state, nil)
}

// sendNotify sends one datagram to NOTIFY_SOCKET, with fds attached as
// SCM_RIGHTS when given. A raw socket: the net package refuses control
// messages on a connected datagram socket. x/sys maps a leading '@' to
// the abstract namespace, as systemd means it.
func sendNotify(state string, fds []int) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET is not set")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
