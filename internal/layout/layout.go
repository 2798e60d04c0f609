// Package layout names every file and directory banger keeps on the host:
// the state, runtime, config, data and cache directories resolved from the
// environment, the daemon socket, and the files of an image's and a VM's
// directory. bangerd, the CLI and the VMM drivers take these names from
// here, so each is written once (ARCHITECTURE.md, "Data layout", shows the
// same tree).
//
// It imports only the standard library, so the CLI and the api client can
// find the daemon socket without linking anything host-facing.
package layout

import (
	"fmt"
	"os"
	"path/filepath"
)

// Environment variables that override the default locations.
const (
	EnvConfig   = "BANGER_CONFIG"
	EnvStateDir = "BANGER_STATE_DIR"
	EnvSocket   = "BANGER_SOCKET"
	EnvCacheDir = "BANGER_CACHE_DIR"
)

// AppDir is banger's directory name under each XDG base directory.
const AppDir = "banger"

// Names under the state, runtime, config and data directories.
const (
	// DBFile is the SQLite database, in the state directory.
	DBFile = "banger.db"
	// DaemonLogFile is bangerd's log, in the state directory.
	DaemonLogFile = "bangerd.log"
	// ImagesSubdir holds one directory per image, in the state directory.
	ImagesSubdir = "images"
	// VMsSubdir holds one directory per VM (VMDir), in the state directory.
	VMsSubdir = "vms"
	// JailsSubdir is Firecracker's jailer --chroot-base-dir, in the state
	// directory (on its filesystem: jails hold hard links to VM disks).
	JailsSubdir = "jail"
	// RunSubdir is the runtime directory under the state directory when
	// $XDG_RUNTIME_DIR is unset.
	RunSubdir = "run"
	// SocketFile is the daemon socket, in the runtime directory.
	SocketFile = "bangerd.sock"
	// ConfigFile is the optional TOML config, in the config directory.
	ConfigFile = "config.toml"
	// SSHSubdir holds banger's ssh key, in the data directory.
	SSHSubdir = "ssh"
	// SSHKeyFile is banger's private ssh key, in SSHSubdir.
	SSHKeyFile = "id_ed25519"
)

// Files of a VM directory (<state>/vms/<id>/). Short on purpose: unix
// socket paths are limited to 107 bytes.
const (
	// OverlayFile is the sparse overlay drive (label banger-overlay).
	OverlayFile = "overlay.ext4"
	// WorkFile is the work disk mounted at /root (label banger-work).
	WorkFile = "work.ext4"
	// ConfigDriveFile is the config drive (label banger-config).
	ConfigDriveFile = "config.ext4"
	// ConsoleLogFile is the guest serial console, bounded and rotated.
	ConsoleLogFile = "console.log"
	// VMMLogFile is the VMM's own log.
	VMMLogFile = "vmm.log"
	// MetricsFile is Firecracker's metrics log.
	MetricsFile = "metrics.log"
	// HandlesFile holds the VM's vmm.Handles (JSON), for re-adoption.
	HandlesFile = "handles.json"
	// APISocketFile is Firecracker's API socket.
	APISocketFile = "api.sock"
	// VsockSocketFile is Firecracker's hybrid vsock socket.
	VsockSocketFile = "vsock.sock"
	// AgentSocketFile is QEMU's end of the virtio-serial agent port.
	AgentSocketFile = "agent.sock"
	// QMPSocketFile is QEMU's QMP socket.
	QMPSocketFile = "qmp.sock"
	// PIDFile holds the VMM's PID.
	PIDFile = "vmm.pid"
	// SuspendDir holds a suspended VM's saved memory and device state
	// (the VMM's files plus SavedStateFile); its presence while no VMM
	// runs is what makes the VM suspended.
	SuspendDir = "suspend"
	// HostKeyFile is the VM's ssh host private key (ed25519), made by the
	// host at its first boot and given to the guest at every boot and
	// restore, so the key the host pins never changes; its public half
	// is HostKeyFile + ".pub".
	HostKeyFile = "ssh_host_ed25519_key"
	// EgressCAFile and EgressCAKeyFile are the VM's egress CA (made when
	// a VM with secrets first boots): the guest trusts the certificate,
	// the key (0600) never leaves the host.
	EgressCAFile    = "egress-ca.crt"
	EgressCAKeyFile = "egress-ca.key"
	// WarmDir, in the state directory, holds the images' warm templates:
	// one directory per image and machine shape with a booted guest's
	// saved state (StateFile), its disks and TemplateFile.
	WarmDir = "warm"
	// TemplateFile describes a warm template or a named snapshot (see
	// vmctl): state a new VM can be restored from.
	TemplateFile = "template.json"
	// SnapshotsDir, in a VM directory, holds the VM's named snapshots,
	// one directory each, laid out like a warm template. Snapshots go
	// with their VM when it is deleted.
	SnapshotsDir = "snapshots"
	// SavedStateFile describes the state in a SuspendDir: the VMM and its
	// version, the machine shape, and each file's size and SHA-256.
	SavedStateFile = "state.json"
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
	JailsDir   string // <StateDir>/jail: Firecracker's jails, when bangerd runs it under its jailer
}

// FromEnv computes Paths from getenv (os.Getenv outside tests): the
// BANGER_* overrides, then the XDG base directories (relative XDG values
// are ignored, as the specification requires), then $HOME. It creates
// nothing; see Ensure. When XDG_RUNTIME_DIR is unset (root in CI, cron),
// the socket lives in <StateDir>/run, a directory Ensure makes private.
func FromEnv(getenv func(string) string) (Paths, error) {
	var p Paths
	var err error
	if p.StateDir, err = dirFromEnv(getenv, EnvStateDir, "XDG_STATE_HOME", ".local/state"); err != nil {
		return Paths{}, err
	}
	if p.DataDir, err = dirFromEnv(getenv, "", "XDG_DATA_HOME", ".local/share"); err != nil {
		return Paths{}, err
	}
	if p.CacheDir, err = dirFromEnv(getenv, EnvCacheDir, "XDG_CACHE_HOME", ".cache"); err != nil {
		return Paths{}, err
	}
	if p.ConfigFile, err = absFromEnv(getenv, EnvConfig); err != nil {
		return Paths{}, err
	}
	if p.ConfigFile == "" {
		cfgDir, err := xdgDir(getenv, "XDG_CONFIG_HOME", ".config")
		if err != nil {
			return Paths{}, err
		}
		p.ConfigFile = filepath.Join(cfgDir, ConfigFile)
	}
	if p.RuntimeDir, p.Socket, err = socketFromEnv(getenv, func() (string, error) { return p.StateDir, nil }); err != nil {
		return Paths{}, err
	}
	p.SSHDir = filepath.Join(p.DataDir, SSHSubdir)
	p.DB = filepath.Join(p.StateDir, DBFile)
	p.LogFile = filepath.Join(p.StateDir, DaemonLogFile)
	p.ImagesDir = filepath.Join(p.StateDir, ImagesSubdir)
	p.VMsDir = filepath.Join(p.StateDir, VMsSubdir)
	p.JailsDir = filepath.Join(p.StateDir, JailsSubdir)
	return p, nil
}

// Socket returns the daemon socket FromEnv would choose. It resolves the
// state directory only when the socket lives under it, so a client with
// $BANGER_SOCKET or $XDG_RUNTIME_DIR set needs no $HOME.
func Socket(getenv func(string) string) (string, error) {
	_, sock, err := socketFromEnv(getenv, func() (string, error) {
		return dirFromEnv(getenv, EnvStateDir, "XDG_STATE_HOME", ".local/state")
	})
	return sock, err
}

// socketFromEnv returns the runtime directory and the socket in it:
// $BANGER_SOCKET and its directory, else $XDG_RUNTIME_DIR/banger, else
// RunSubdir under the state directory.
func socketFromEnv(getenv func(string) string, stateDir func() (string, error)) (dir, sock string, err error) {
	if sock, err = absFromEnv(getenv, EnvSocket); err != nil || sock != "" {
		return filepath.Dir(sock), sock, err
	}
	if rt := getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(rt) {
		dir = filepath.Join(rt, AppDir)
	} else {
		state, err := stateDir()
		if err != nil {
			return "", "", err
		}
		dir = filepath.Join(state, RunSubdir)
	}
	return dir, filepath.Join(dir, SocketFile), nil
}

// dirFromEnv returns an absolute $override when set, else xdgDir.
func dirFromEnv(getenv func(string) string, override, xdgEnv, fallback string) (string, error) {
	if override != "" {
		if d, err := absFromEnv(getenv, override); err != nil || d != "" {
			return d, err
		}
	}
	return xdgDir(getenv, xdgEnv, fallback)
}

// xdgDir returns $env/banger when $env is absolute, else
// $HOME/fallback/banger.
func xdgDir(getenv func(string) string, env, fallback string) (string, error) {
	if v := getenv(env); filepath.IsAbs(v) {
		return filepath.Join(v, AppDir), nil
	}
	home := getenv("HOME")
	if !filepath.IsAbs(home) {
		return "", fmt.Errorf("resolve paths: neither $%s nor $HOME is set to an absolute path", env)
	}
	return filepath.Join(home, fallback, AppDir), nil
}

// absFromEnv returns $env made absolute, or "" when unset.
func absFromEnv(getenv func(string) string, env string) (string, error) {
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
