package api

import (
	"os"
	"path/filepath"
)

// DefaultSocket returns the daemon socket path from the environment, by
// the same rule as config.DefaultPaths (a test keeps the two in step):
// $BANGER_SOCKET, else $XDG_RUNTIME_DIR/banger/bangerd.sock, else
// run/bangerd.sock in a private directory under the state dir
// ($BANGER_STATE_DIR, else $XDG_STATE_HOME/banger, else
// ~/.local/state/banger).
func DefaultSocket() string {
	if s := os.Getenv("BANGER_SOCKET"); s != "" {
		return s
	}
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		return filepath.Join(rt, "banger", SocketFileName)
	}
	return filepath.Join(defaultStateDir(), "run", SocketFileName)
}

func defaultStateDir() string {
	if s := os.Getenv("BANGER_STATE_DIR"); s != "" {
		return s
	}
	if s := os.Getenv("XDG_STATE_HOME"); s != "" {
		return filepath.Join(s, "banger")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/"
	}
	return filepath.Join(home, ".local", "state", "banger")
}
