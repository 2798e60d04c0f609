// Package agentmux is the yamux configuration of the agent's
// virtio-serial channel, shared by both ends: the host's serial dialer
// (agent/agentclient) and the guest's transport (agent/guest). It lives
// apart so that neither end links the other's code.
package agentmux

import (
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// StreamOpenTimeout bounds opening one stream on the session.
const StreamOpenTimeout = 5 * time.Second

// Config returns the yamux configuration of both ends of a serial
// channel: keepalives so a dead peer is noticed, bounded writes and
// stream opens, and no yamux logging.
func Config() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = 10 * time.Second
	cfg.ConnectionWriteTimeout = 10 * time.Second
	cfg.StreamOpenTimeout = StreamOpenTimeout
	cfg.StreamCloseTimeout = 30 * time.Second
	cfg.LogOutput = io.Discard
	return cfg
}

// GuestConfig is Config without keepalives, for the guest's end. The guest
// learns that the host went away from the port itself (reads return EOF),
// and a keepalive ping in flight when the VM is paused or saved would time
// out as soon as the guest runs again, ending the session a reconnected
// host has just begun to use.
func GuestConfig() *yamux.Config {
	cfg := Config()
	cfg.EnableKeepAlive = false
	return cfg
}
