// Package buildinfo reports which build of banger is running: a
// human-readable version and a build stamp used by the CLI <-> daemon
// handshake.
//
// The handshake rule: when the CLI connects to a running bangerd whose
// build stamp is strictly older than the CLI's own, the CLI stops that
// daemon and starts the bangerd that sits next to it. Equal or newer
// stamps are left alone, so two CLIs of different ages never fight over
// the daemon.
//
// Both values can be set at link time:
//
//	go build -ldflags "-X banger/internal/buildinfo.version=v0.1.0 \
//	    -X banger/internal/buildinfo.stamp=$(date +%s)"
//
// The stamp is a decimal count of seconds since the Unix epoch. Without
// it (plain `go build`, `go test`) the stamp falls back to the
// modification time of the running executable, which is also "when was
// this binary built" for every binary produced by the Go tool.
package buildinfo

import (
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"banger/internal/units"
)

// Set with -ldflags -X; see the package documentation.
var (
	version string
	stamp   string
)

// Version returns the version set at link time, else one derived from the
// module and VCS information embedded by the Go tool ("devel-<rev>[-dirty]"),
// else "devel".
func Version() string {
	if version != "" {
		return version
	}
	return versionFromBuildInfo()
}

func versionFromBuildInfo() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	v := "devel-" + units.ShortID(rev)
	if dirty {
		v += "-dirty"
	}
	return v
}

var (
	stampOnce sync.Once
	stampVal  time.Time
)

// BuildStamp returns when this binary was built: the link-time stamp when
// set (and valid), else the executable's modification time, else the
// zero time (which is older than every real stamp).
func BuildStamp() time.Time {
	stampOnce.Do(func() { stampVal = resolveStamp(stamp, os.Executable) })
	return stampVal
}

// resolveStamp implements BuildStamp's rule; exe is os.Executable.
func resolveStamp(ldflag string, exe func() (string, error)) time.Time {
	if ldflag != "" {
		if secs, err := strconv.ParseInt(ldflag, 10, 64); err == nil && secs > 0 {
			return time.Unix(secs, 0).UTC()
		}
	}
	path, err := exe()
	if err != nil {
		return time.Time{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime().UTC()
}

// Older reports whether a build stamped daemon is older than one stamped
// cli, i.e. whether the CLI should replace the daemon.
func Older(daemon, cli time.Time) bool {
	return daemon.Before(cli)
}
