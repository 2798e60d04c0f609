package hostcap

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ownerProbes answers Owner from a table; paths not in it do not exist.
func ownerProbes(m map[string]PathOwner) Probes {
	return Probes{Owner: func(path string) (PathOwner, error) {
		if o, ok := m[path]; ok {
			return o, nil
		}
		return PathOwner{}, &fs.PathError{Op: "lstat", Path: path, Err: fs.ErrNotExist}
	}}
}

func rootDir(perm fs.FileMode) PathOwner  { return PathOwner{Mode: fs.ModeDir | perm} }
func rootFile(perm fs.FileMode) PathOwner { return PathOwner{Mode: perm} }

// chain is a root-owned /usr/local/bin/bangerd with the given overrides.
func chain(over map[string]PathOwner) map[string]PathOwner {
	m := map[string]PathOwner{
		"/":                      rootDir(0o755),
		"/usr":                   rootDir(0o755),
		"/usr/local":             rootDir(0o755),
		"/usr/local/bin":         rootDir(0o755),
		"/usr/local/bin/bangerd": rootFile(0o755),
	}
	for k, v := range over {
		m[k] = v
	}
	return m
}

func TestRootOnlyChain(t *testing.T) {
	tests := []struct {
		name string
		path string
		host map[string]PathOwner
		want []string // substrings, one per expected problem; nil = ok
	}{
		{name: "root-owned chain", path: "/usr/local/bin/bangerd", host: chain(nil)},
		{name: "unclean path is cleaned", path: "/usr/local/bin//bangerd", host: chain(nil)},
		{name: "binary owned by the user", path: "/usr/local/bin/bangerd",
			host: chain(map[string]PathOwner{"/usr/local/bin/bangerd": {UID: 1000, GID: 1000, Mode: 0o755, Writable: true}}),
			want: []string{"/usr/local/bin/bangerd is owned by uid 1000"}},
		{name: "group-writable binary", path: "/usr/local/bin/bangerd",
			host: chain(map[string]PathOwner{"/usr/local/bin/bangerd": {GID: 50, Mode: 0o775}}),
			want: []string{"/usr/local/bin/bangerd is writable by group or others (mode 0775)"}},
		{name: "binary writable through an ACL", path: "/usr/local/bin/bangerd",
			host: chain(map[string]PathOwner{"/usr/local/bin/bangerd": {Mode: 0o755, Writable: true}}),
			want: []string{"/usr/local/bin/bangerd is writable by this user"}},
		{name: "parent owned by the user (a clone)", path: "/home/u/banger/bin/bangerd",
			host: map[string]PathOwner{
				"/": rootDir(0o755), "/home": rootDir(0o755),
				"/home/u":                    {UID: 1000, Mode: fs.ModeDir | 0o755, Writable: true},
				"/home/u/banger":             {UID: 1000, Mode: fs.ModeDir | 0o755, Writable: true},
				"/home/u/banger/bin":         {UID: 1000, Mode: fs.ModeDir | 0o755, Writable: true},
				"/home/u/banger/bin/bangerd": {UID: 1000, Mode: 0o755, Writable: true},
			},
			want: []string{"bin/bangerd is owned by uid 1000", "banger/bin is owned by uid 1000", "/home/u/banger is owned by uid 1000", "/home/u is owned by uid 1000"}},
		{name: "group-writable directory", path: "/usr/local/bin/bangerd",
			host: chain(map[string]PathOwner{"/usr/local": {GID: 50, Mode: fs.ModeDir | fs.ModeSetgid | 0o775}}),
			want: []string{"/usr/local is writable by group or others (mode 2775)"}},
		{name: "sticky world-writable directory is no exception", path: "/tmp/p/bangerd",
			host: map[string]PathOwner{"/": rootDir(0o755), "/tmp": rootDir(0o777 | fs.ModeSticky), "/tmp/p": rootDir(0o755), "/tmp/p/bangerd": rootFile(0o755)},
			want: []string{"/tmp is writable by group or others (mode 1777)"}},
		{name: "symlink in the chain", path: "/opt/b/bangerd",
			host: map[string]PathOwner{"/": rootDir(0o755), "/opt": rootDir(0o755), "/opt/b": {Mode: fs.ModeSymlink | 0o777}, "/opt/b/bangerd": rootFile(0o755)},
			want: []string{"/opt/b is a symbolic link"}},
		{name: "binary is a directory", path: "/usr/local/bin/bangerd",
			host: chain(map[string]PathOwner{"/usr/local/bin/bangerd": rootDir(0o755)}),
			want: []string{"is not a regular file"}},
		{name: "missing binary", path: "/usr/local/bin/bangerd",
			host: map[string]PathOwner{"/": rootDir(0o755), "/usr": rootDir(0o755), "/usr/local": rootDir(0o755), "/usr/local/bin": rootDir(0o755)},
			want: []string{"cannot inspect /usr/local/bin/bangerd"}},
		{name: "relative path", path: "bin/bangerd", host: chain(nil), want: []string{"not an absolute path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RootOnlyChain(ownerProbes(tt.host), tt.path)
			if len(got) != len(tt.want) {
				t.Fatalf("RootOnlyChain(%s) = %q, want %d problems like %q", tt.path, got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

// TestRootOnlyChain_realHost runs the real probe on a file this test
// makes: Owner reports it as this user's, regular, with its mode and
// writable, and a file in a temporary directory is never safe (owned by
// the user, or under a world-writable /tmp when the test runs as root).
func TestRootOnlyChain_realHost(t *testing.T) {
	p := Real()
	f := filepath.Join(t.TempDir(), "bangerd")
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o751); err != nil {
		t.Fatal(err)
	}
	o, err := p.Owner(f)
	if err != nil {
		t.Fatal(err)
	}
	if int(o.UID) != os.Geteuid() || o.Mode != 0o751 || !o.Writable {
		t.Errorf("Owner(%s) = %+v, want uid %d, mode 0751, writable", f, o, os.Geteuid())
	}
	link := f + ".link"
	if err := os.Symlink(f, link); err != nil {
		t.Fatal(err)
	}
	if o, err := p.Owner(link); err != nil || o.Mode&fs.ModeSymlink == 0 {
		t.Errorf("Owner(%s) = %+v, %v: want the link itself", link, o, err)
	}
	if got := RootOnlyChain(p, f); len(got) == 0 {
		t.Errorf("RootOnlyChain(%s) found no problem", f)
	}
}
