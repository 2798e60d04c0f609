package config

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// FileSync is one [[file_sync]] entry: a host file or directory copied
// into every new VM's work disk (mounted at /root in the guest).
//
// Host is absolute or "~/..." (the host user's HOME). Guest is "~/..." or
// "/root/..." ("~/" means /root/ in the guest). Neither may contain ".."
// or name another user's home ("~user/..."), and neither may be the bare
// home directory itself. Mode is an octal permission string for file
// entries ("0755", "755" or "0o755", at most 0777); it defaults to 0600 and
// is ignored for directories, whose files keep their own permissions.
type FileSync struct {
	Host  string   `toml:"host"`
	Guest string   `toml:"guest"`
	Mode  FileMode `toml:"mode"`
}

// DefaultFileSyncMode is the mode of a synced file entry without mode.
const DefaultFileSyncMode os.FileMode = 0o600

// GuestHome is the guest directory "~/" stands for in file_sync guest paths.
const GuestHome = "/root"

// ParseFileMode parses an octal permission string: "0755", "755" or
// "0o755". Values above 0777 (setuid, setgid, sticky) are rejected.
func ParseFileMode(s string) (os.FileMode, error) {
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	if digits == "" || len(digits) > 4 {
		return 0, fmt.Errorf("mode %q: want an octal permission such as \"0644\"", s)
	}
	for _, r := range digits {
		if r < '0' || r > '7' {
			return 0, fmt.Errorf("mode %q: want an octal permission such as \"0644\"", s)
		}
	}
	v, err := strconv.ParseUint(digits, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("mode %q: %w", s, err)
	}
	if v > 0o777 {
		return 0, fmt.Errorf("mode %q: above 0777 (setuid, setgid and sticky bits are not allowed)", s)
	}
	return os.FileMode(v), nil
}

// check validates the entry without touching the filesystem.
func (f FileSync) check() (field, reason string) {
	if f.Host == "" {
		return "host", "must not be empty"
	}
	if f.Guest == "" {
		return "guest", "must not be empty"
	}
	if r := checkSyncPath(f.Host, false); r != "" {
		return "host", r
	}
	if r := checkSyncPath(f.Guest, true); r != "" {
		return "guest", r
	}
	if f.Mode != "" {
		if _, err := ParseFileMode(string(f.Mode)); err != nil {
			return "mode", strings.TrimPrefix(err.Error(), fmt.Sprintf("mode %q: ", f.Mode))
		}
	}
	return "", ""
}

func checkSyncPath(p string, guest bool) string {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return `must not contain ".."`
		}
	}
	var rest string
	switch {
	case strings.HasPrefix(p, "~/"):
		rest = p[2:]
	case p == "~" || guest && path.Clean(p) == GuestHome:
		return "must name a path below the home directory, not the home directory itself"
	case strings.HasPrefix(p, "~"):
		return `"~user" paths are not supported; use "~/" or an absolute path`
	case guest && strings.HasPrefix(p, GuestHome+"/"):
		rest = p[len(GuestHome)+1:]
	case guest:
		return "guest path must be under ~/ or /root/"
	case path.IsAbs(p):
		return ""
	default:
		return `must be absolute or start with "~/"`
	}
	if c := path.Clean("/" + rest); c == "/" {
		return "must name a path below the home directory, not the home directory itself"
	}
	return ""
}

// Resolve expands the entry for use: the host path with "~/" expanded
// against home (the host user's HOME), the absolute guest path under
// /root, and the file mode (DefaultFileSyncMode when unset).
func (f FileSync) Resolve(home string) (hostPath, guestPath string, mode os.FileMode, err error) {
	if field, reason := f.check(); field != "" {
		return "", "", 0, fmt.Errorf("file_sync %s: %s", field, reason)
	}
	hostPath = f.Host
	if strings.HasPrefix(f.Host, "~/") {
		if home == "" || !filepath.IsAbs(home) {
			return "", "", 0, fmt.Errorf("file_sync host %q: home directory %q is not an absolute path", f.Host, home)
		}
		hostPath = filepath.Join(home, f.Host[2:])
	}
	hostPath = filepath.Clean(hostPath)
	g := f.Guest
	if strings.HasPrefix(g, "~/") {
		g = GuestHome + "/" + g[2:]
	}
	guestPath = path.Clean(g)
	mode = f.Mode.Perm(DefaultFileSyncMode) // checked above
	return hostPath, guestPath, mode, nil
}
