package doctor

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/hostcap"
)

// sudoHost is a table row for the sudo rule check: the effective uid and
// the owner and mode of each path (absent paths do not exist).
type sudoHost struct {
	euid  int
	paths map[string]hostcap.PathOwner
}

func (h sudoHost) probes() hostcap.Probes {
	return hostcap.Probes{
		Geteuid:  func() int { return h.euid },
		Username: func() (string, error) { return "dev", nil },
		Owner: func(path string) (hostcap.PathOwner, error) {
			if o, ok := h.paths[path]; ok {
				return o, nil
			}
			return hostcap.PathOwner{}, fs.ErrNotExist
		},
	}
}

func dir(uid uint32, perm fs.FileMode, writable bool) hostcap.PathOwner {
	return hostcap.PathOwner{UID: uid, Mode: fs.ModeDir | perm, Writable: writable}
}

func file(uid uint32, perm fs.FileMode, writable bool) hostcap.PathOwner {
	return hostcap.PathOwner{UID: uid, Mode: perm, Writable: writable}
}

// installed is a root-owned /usr/local/bin/bangerd, changed by over.
func installed(over map[string]hostcap.PathOwner) map[string]hostcap.PathOwner {
	m := map[string]hostcap.PathOwner{
		"/": dir(0, 0o755, false), "/usr": dir(0, 0o755, false), "/usr/local": dir(0, 0o755, false),
		"/usr/local/bin": dir(0, 0o755, false), "/usr/local/bin/bangerd": file(0, 0o755, false),
	}
	for k, v := range over {
		m[k] = v
	}
	return m
}

func TestSudoRuleCheck(t *testing.T) {
	const bin = "/usr/local/bin/bangerd"
	tests := []struct {
		name    string
		host    sudoHost
		bangerd string
		status  api.CheckStatus
		detail  []string // substrings
	}{
		{name: "root-owned chain", host: sudoHost{euid: 1000, paths: installed(nil)}, bangerd: bin,
			status: StatusOK, detail: []string{bin, "root's alone"}},
		{name: "root needs no rule", host: sudoHost{euid: 0}, bangerd: "/home/dev/banger/bin/bangerd",
			status: StatusOK, detail: []string{"running as root"}},
		{name: "binary writable by the user", bangerd: bin,
			host:   sudoHost{euid: 1000, paths: installed(map[string]hostcap.PathOwner{bin: file(1000, 0o755, true)})},
			status: StatusFail, detail: []string{bin + " is owned by uid 1000"}},
		{name: "binary in the user's clone", bangerd: "/home/dev/banger/bin/bangerd",
			host: sudoHost{euid: 1000, paths: map[string]hostcap.PathOwner{
				"/": dir(0, 0o755, false), "/home": dir(0, 0o755, false), "/home/dev": dir(1000, 0o755, true),
				"/home/dev/banger": dir(1000, 0o755, true), "/home/dev/banger/bin": dir(1000, 0o755, true),
				"/home/dev/banger/bin/bangerd": file(1000, 0o755, true),
			}},
			status: StatusFail, detail: []string{"/home/dev/banger/bin/bangerd is owned by uid 1000", "(and 1 more)", "passwordless root"}},
		{name: "parent writable by the user", bangerd: bin,
			host:   sudoHost{euid: 1000, paths: installed(map[string]hostcap.PathOwner{"/usr/local/bin": dir(1000, 0o755, true)})},
			status: StatusFail, detail: []string{"/usr/local/bin is owned by uid 1000"}},
		{name: "group-writable directory", bangerd: bin,
			host:   sudoHost{euid: 1000, paths: installed(map[string]hostcap.PathOwner{"/usr/local": dir(0, 0o775, false)})},
			status: StatusFail, detail: []string{"/usr/local is writable by group or others (mode 0775)"}},
		{name: "root-owned but writable through an ACL", bangerd: bin,
			host:   sudoHost{euid: 1000, paths: installed(map[string]hostcap.PathOwner{"/usr/local/bin": dir(0, 0o755, true)})},
			status: StatusFail, detail: []string{"/usr/local/bin is writable by this user"}},
		{name: "under sticky /tmp", bangerd: "/tmp/b/bangerd",
			host: sudoHost{euid: 1000, paths: map[string]hostcap.PathOwner{
				"/": dir(0, 0o755, false), "/tmp": dir(0, 0o777|fs.ModeSticky, true), "/tmp/b": dir(0, 0o755, false), "/tmp/b/bangerd": file(0, 0o755, false),
			}},
			status: StatusFail, detail: []string{"/tmp is writable by group or others (mode 1777)"}},
		{name: "path unknown", host: sudoHost{euid: 1000, paths: installed(nil)},
			status: StatusWarn, detail: []string{"unknown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := sudoRuleCheck(tt.host.probes(), tt.bangerd)
			if ch.Name != "sudo rule" || ch.Status != tt.status {
				t.Fatalf("check = %+v, want %s", ch, tt.status)
			}
			for _, d := range tt.detail {
				if !strings.Contains(ch.Detail, d) {
					t.Errorf("detail %q does not contain %q", ch.Detail, d)
				}
			}
			if ch.Status != StatusOK {
				for _, f := range []string{"sudo make install", "dev ALL=(root) NOPASSWD: /usr/local/bin/bangerd priv *"} {
					if !strings.Contains(ch.Fix, f) {
						t.Errorf("fix %q does not contain %q", ch.Fix, f)
					}
				}
			}
		})
	}
}

// TestRun_sudoRule: Run includes the check, an unsafe rule fails the
// report, and the privilege check's hint never names an unsafe path.
func TestRun_sudoRule(t *testing.T) {
	clone := "/home/dev/banger/bin/bangerd"
	h := fakeHost{cpuinfo: cpuVMX, bins: baseBins(bothBins), versions: bothVers, euid: 1000, user: "dev", free: 100 * gib}
	p := h.probes()
	p.Owner = func(path string) (hostcap.PathOwner, error) {
		if strings.HasPrefix(path, "/home/dev") {
			return hostcap.PathOwner{UID: 1000, Mode: fs.ModeDir | 0o755, Writable: true}, nil
		}
		if path == "/" || path == "/home" {
			return hostcap.PathOwner{Mode: fs.ModeDir | 0o755}, nil
		}
		return hostcap.PathOwner{}, errors.New("unexpected path " + path)
	}
	rep := Run(context.Background(), p, Input{Config: config.Default(), Paths: config.Paths{StateDir: "/state"}, BangerdPath: clone})
	if rep.OK {
		t.Errorf("report OK with a sudo rule for %s", clone)
	}
	got := map[string]Check{}
	for _, ch := range rep.Checks {
		got[ch.Name] = ch
	}
	if ch := got["sudo rule"]; ch.Status != StatusFail || !strings.Contains(ch.Detail, clone) {
		t.Errorf("sudo rule = %+v, want a failure naming %s", ch, clone)
	}
	if ch := got["privilege"]; strings.Contains(ch.Fix, clone) || !strings.Contains(ch.Fix, InstalledBangerd+" priv *") {
		t.Errorf("privilege fix = %q, want the installed path, not %s", ch.Fix, clone)
	}
}
