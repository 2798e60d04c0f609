package api

import (
	"os"

	"banger/internal/layout"
)

// DefaultSocket returns the daemon socket path from the environment, by
// layout's rule (the one config.DefaultPaths uses): $BANGER_SOCKET, else
// $XDG_RUNTIME_DIR/banger/bangerd.sock, else run/bangerd.sock under the
// state dir. It is "" when the state dir is needed and the environment
// names no absolute home for it; a dial then fails with a DialError.
func DefaultSocket() string {
	sock, err := layout.Socket(os.Getenv)
	if err != nil {
		return ""
	}
	return sock
}
