package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// Paths are the files and directories banger uses on the host.
type Paths struct {
	ConfigFile string // $BANGER_CONFIG or $XDG_CONFIG_HOME/banger/config.toml (optional, never written)
	StateDir   string // $BANGER_STATE_DIR or $XDG_STATE_HOME/banger
	RuntimeDir string // directory of the socket: $XDG_RUNTIME_DIR/banger, or <StateDir>/run
	Socket     string // $BANGER_SOCKET or <RuntimeDir>/bangerd.sock
	DataDir    string // $XDG_DATA_HOME/banger
	SSHDir     string // <DataDir>/ssh: banger's generated ssh key
	CacheDir   string // $BANGER_CACHE_DIR or $XDG_CACHE_HOME/banger: downloads, build caches
	DB         string // <StateDir>/banger.db
	LogFile    string // <StateDir>/bangerd.log
	ImagesDir  string // <StateDir>/images
	VMsDir     string // <StateDir>/vms
}

// Environment variables that override the default locations.
const (
	EnvConfig   = "BANGER_CONFIG"
	EnvStateDir = "BANGER_STATE_DIR"
	EnvSocket   = "BANGER_SOCKET"
	EnvCacheDir = "BANGER_CACHE_DIR"
)

// DefaultPaths computes Paths from the environment: the BANGER_*
// overrides, then the XDG base directories (relative XDG values are
// ignored, as the specification requires), then $HOME. It creates
// nothing; see Ensure. When XDG_RUNTIME_DIR is unset (root in CI, cron),
// the socket lives in <StateDir>/run, a directory Ensure makes private.
func DefaultPaths() (Paths, error) {
	return pathsFromEnv(os.Getenv)
}

func pathsFromEnv(getenv func(string) string) (Paths, error) {
	home := getenv("HOME")
	// xdg returns $env/banger, or $HOME/fallback/banger.
	xdg := func(env, fallback string) (string, error) {
		if v := getenv(env); filepath.IsAbs(v) {
			return filepath.Join(v, "banger"), nil
		}
		if !filepath.IsAbs(home) {
			return "", fmt.Errorf("resolve paths: neither $%s nor $HOME is set to an absolute path", env)
		}
		return filepath.Join(home, fallback, "banger"), nil
	}
	// override returns an absolute $env, or "" when unset.
	override := func(env string) (string, error) {
		v := getenv(env)
		if v == "" {
			return "", nil
		}
		abs, err := filepath.Abs(v)
		if err != nil {
			return "", fmt.Errorf("resolve paths: $%s=%q: %w", env, v, err)
		}
		return abs, nil
	}
	var p Paths
	var err error
	pick := func(dst *string, env, xdgEnv, fallback string) {
		if err != nil {
			return
		}
		if env != "" {
			if *dst, err = override(env); err != nil || *dst != "" {
				return
			}
		}
		*dst, err = xdg(xdgEnv, fallback)
	}
	pick(&p.StateDir, EnvStateDir, "XDG_STATE_HOME", ".local/state")
	pick(&p.DataDir, "", "XDG_DATA_HOME", ".local/share")
	pick(&p.CacheDir, EnvCacheDir, "XDG_CACHE_HOME", ".cache")
	var cfgDir string
	if p.ConfigFile, err = override(EnvConfig); err == nil && p.ConfigFile == "" {
		cfgDir, err = xdg("XDG_CONFIG_HOME", ".config")
		p.ConfigFile = filepath.Join(cfgDir, "config.toml")
	}
	if err != nil {
		return Paths{}, err
	}
	p.Socket, err = override(EnvSocket)
	if err != nil {
		return Paths{}, err
	}
	switch rt := getenv("XDG_RUNTIME_DIR"); {
	case p.Socket != "":
		p.RuntimeDir = filepath.Dir(p.Socket)
	case filepath.IsAbs(rt):
		p.RuntimeDir = filepath.Join(rt, "banger")
	default:
		p.RuntimeDir = filepath.Join(p.StateDir, "run")
	}
	if p.Socket == "" {
		p.Socket = filepath.Join(p.RuntimeDir, "bangerd.sock")
	}
	p.SSHDir = filepath.Join(p.DataDir, "ssh")
	p.DB = filepath.Join(p.StateDir, "banger.db")
	p.LogFile = filepath.Join(p.StateDir, "bangerd.log")
	p.ImagesDir = filepath.Join(p.StateDir, "images")
	p.VMsDir = filepath.Join(p.StateDir, "vms")
	return p, nil
}

// Ensure creates the directories banger writes to (state, runtime, data,
// ssh, cache, images, vms) with mode 0700, like mkdir -p. Existing
// directories are left as they are. The config directory is never created.
func (p Paths) Ensure() error {
	for _, d := range []string{p.StateDir, p.RuntimeDir, p.DataDir, p.SSHDir, p.CacheDir, p.ImagesDir, p.VMsDir} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	return nil
}

// SSHKeyPath returns the private key banger uses for guests: ssh_key from
// the config ("~/" expanded against $HOME), or id_ed25519 in p.SSHDir.
func (c *Config) SSHKeyPath(p Paths) (string, error) {
	if c == nil || c.SSHKey == "" {
		return filepath.Join(p.SSHDir, "id_ed25519"), nil
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
