package api

import (
	"os"
	"path/filepath"
)

// DefaultSocket returns the daemon socket path from the environment, by
// the same rule as config.DefaultPaths (a daemon test keeps the two in
// step): $BANGER_SOCKET, else $XDG_RUNTIME_DIR/banger/bangerd.sock, else
// run/bangerd.sock under the state dir ($BANGER_STATE_DIR, else
// $XDG_STATE_HOME/banger, else $HOME/.local/state/banger). Relative XDG
// values are ignored, as the XDG specification requires.
func DefaultSocket() string {
	if s := os.Getenv("BANGER_SOCKET"); s != "" {
		if abs, err := filepath.Abs(s); err == nil {
			return abs
		}
		return s
	}
	if rt := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(rt) {
		return filepath.Join(rt, "banger", SocketFileName)
	}
	return filepath.Join(defaultStateDir(), "run", SocketFileName)
}

func defaultStateDir() string {
	if s := os.Getenv("BANGER_STATE_DIR"); s != "" {
		if abs, err := filepath.Abs(s); err == nil {
			return abs
		}
		return s
	}
	if s := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(s) {
		return filepath.Join(s, "banger")
	}
	return filepath.Join(os.Getenv("HOME"), ".local", "state", "banger")
}
