package config

import (
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/layout"
)

// Paths are the files and directories banger uses on the host; the
// layout package owns their names and how the environment picks them.
type Paths = layout.Paths

// DefaultPaths computes Paths from the process environment
// (layout.FromEnv). It creates nothing; see Paths.Ensure.
func DefaultPaths() (Paths, error) {
	return layout.FromEnv(os.Getenv)
}

// SSHKeyPath returns the private key banger uses for guests: ssh_key from
// the config ("~/" expanded against $HOME), or layout.SSHKeyFile in
// p.SSHDir.
func (c *Config) SSHKeyPath(p Paths) (string, error) {
	if c == nil || c.SSHKey == "" {
		return filepath.Join(p.SSHDir, layout.SSHKeyFile), nil
	}
	return expandHome(c.SSHKey)
}

// expandHome expands a leading "~/" against $HOME.
func expandHome(p string) (string, error) {
	if len(p) < 2 || p[:2] != "~/" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("expand %s: %w", p, err)
	}
	return filepath.Join(home, p[2:]), nil
}
