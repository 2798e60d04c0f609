package layout

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFromEnv(t *testing.T) {
	const home = "/home/u"
	tests := []struct {
		name string
		env  map[string]string
		want Paths
	}{
		{
			name: "home only (XDG_RUNTIME_DIR unset)",
			env:  map[string]string{"HOME": home},
			want: Paths{
				ConfigFile: "/home/u/.config/banger/config.toml",
				StateDir:   "/home/u/.local/state/banger",
				RuntimeDir: "/home/u/.local/state/banger/run",
				Socket:     "/home/u/.local/state/banger/run/bangerd.sock",
				DataDir:    "/home/u/.local/share/banger",
				SSHDir:     "/home/u/.local/share/banger/ssh",
				CacheDir:   "/home/u/.cache/banger",
				DB:         "/home/u/.local/state/banger/banger.db",
				LogFile:    "/home/u/.local/state/banger/bangerd.log",
				ImagesDir:  "/home/u/.local/state/banger/images",
				VMsDir:     "/home/u/.local/state/banger/vms",
				JailsDir:   "/home/u/.local/state/banger/jail",
			},
		},
		{
			name: "xdg everywhere",
			env: map[string]string{
				"HOME": home, "XDG_CONFIG_HOME": "/x/cfg", "XDG_STATE_HOME": "/x/state",
				"XDG_DATA_HOME": "/x/data", "XDG_CACHE_HOME": "/x/cache", "XDG_RUNTIME_DIR": "/run/user/1000",
			},
			want: Paths{
				ConfigFile: "/x/cfg/banger/config.toml",
				StateDir:   "/x/state/banger",
				RuntimeDir: "/run/user/1000/banger",
				Socket:     "/run/user/1000/banger/bangerd.sock",
				DataDir:    "/x/data/banger",
				SSHDir:     "/x/data/banger/ssh",
				CacheDir:   "/x/cache/banger",
				DB:         "/x/state/banger/banger.db",
				LogFile:    "/x/state/banger/bangerd.log",
				ImagesDir:  "/x/state/banger/images",
				VMsDir:     "/x/state/banger/vms",
				JailsDir:   "/x/state/banger/jail",
			},
		},
		{
			name: "banger overrides win over xdg",
			env: map[string]string{
				"HOME": home, "XDG_STATE_HOME": "/x/state", "XDG_RUNTIME_DIR": "/run/user/1000",
				"BANGER_CONFIG": "/etc/banger.toml", "BANGER_STATE_DIR": "/srv/banger",
				"BANGER_SOCKET": "/tmp/b/d.sock", "BANGER_CACHE_DIR": "/var/cache/banger",
			},
			want: Paths{
				ConfigFile: "/etc/banger.toml",
				StateDir:   "/srv/banger",
				RuntimeDir: "/tmp/b",
				Socket:     "/tmp/b/d.sock",
				DataDir:    "/home/u/.local/share/banger",
				SSHDir:     "/home/u/.local/share/banger/ssh",
				CacheDir:   "/var/cache/banger",
				DB:         "/srv/banger/banger.db",
				LogFile:    "/srv/banger/bangerd.log",
				ImagesDir:  "/srv/banger/images",
				VMsDir:     "/srv/banger/vms",
				JailsDir:   "/srv/banger/jail",
			},
		},
		{
			name: "state override without runtime dir",
			env:  map[string]string{"HOME": home, "BANGER_STATE_DIR": "/srv/b"},
			want: Paths{
				ConfigFile: "/home/u/.config/banger/config.toml",
				StateDir:   "/srv/b",
				RuntimeDir: "/srv/b/run",
				Socket:     "/srv/b/run/bangerd.sock",
				DataDir:    "/home/u/.local/share/banger",
				SSHDir:     "/home/u/.local/share/banger/ssh",
				CacheDir:   "/home/u/.cache/banger",
				DB:         "/srv/b/banger.db",
				LogFile:    "/srv/b/bangerd.log",
				ImagesDir:  "/srv/b/images",
				VMsDir:     "/srv/b/vms",
				JailsDir:   "/srv/b/jail",
			},
		},
		{
			name: "relative xdg values are ignored",
			env:  map[string]string{"HOME": home, "XDG_STATE_HOME": "rel/state", "XDG_RUNTIME_DIR": "rel/run"},
			want: Paths{
				ConfigFile: "/home/u/.config/banger/config.toml",
				StateDir:   "/home/u/.local/state/banger",
				RuntimeDir: "/home/u/.local/state/banger/run",
				Socket:     "/home/u/.local/state/banger/run/bangerd.sock",
				DataDir:    "/home/u/.local/share/banger",
				SSHDir:     "/home/u/.local/share/banger/ssh",
				CacheDir:   "/home/u/.cache/banger",
				DB:         "/home/u/.local/state/banger/banger.db",
				LogFile:    "/home/u/.local/state/banger/bangerd.log",
				ImagesDir:  "/home/u/.local/state/banger/images",
				VMsDir:     "/home/u/.local/state/banger/vms",
				JailsDir:   "/home/u/.local/state/banger/jail",
			},
		},
	}
	vars := []string{"HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR",
		"BANGER_CONFIG", "BANGER_STATE_DIR", "BANGER_SOCKET", "BANGER_CACHE_DIR"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range vars {
				t.Setenv(v, tt.env[v])
			}
			got, err := FromEnv(os.Getenv)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFromEnv_noHome(t *testing.T) {
	for _, v := range []string{"HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "BANGER_STATE_DIR"} {
		t.Setenv(v, "")
	}
	if _, err := FromEnv(os.Getenv); err == nil {
		t.Fatal("FromEnv succeeded without HOME or XDG dirs")
	}
}

func TestPaths_Ensure(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	for _, v := range []string{"XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "BANGER_CONFIG", "BANGER_STATE_DIR", "BANGER_SOCKET", "BANGER_CACHE_DIR"} {
		t.Setenv(v, "")
	}
	p, err := FromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.StateDir); !os.IsNotExist(err) {
		t.Fatalf("FromEnv created %s (err %v)", p.StateDir, err)
	}
	if err := p.Ensure(); err != nil {
		t.Fatal(err)
	}
	if err := p.Ensure(); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	for _, d := range []string{p.StateDir, p.RuntimeDir, p.DataDir, p.SSHDir, p.CacheDir, p.ImagesDir, p.VMsDir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want dir 0700", d, fi.Mode())
		}
	}
	if _, err := os.Stat(filepath.Dir(p.ConfigFile)); !os.IsNotExist(err) {
		t.Errorf("Ensure created the config dir (err %v)", err)
	}
}

// TestSocket checks that Socket picks FromEnv's socket and needs no home
// when the socket's directory does not depend on the state directory.
func TestSocket(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"runtime dir", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}},
		{"no runtime dir", map[string]string{"XDG_STATE_HOME": "/srv/state"}},
		{"state override", map[string]string{"BANGER_STATE_DIR": "/var/tmp/bs"}},
		{"relative runtime dir ignored", map[string]string{"XDG_RUNTIME_DIR": "run", "BANGER_STATE_DIR": "/var/tmp/bs"}},
		{"socket override", map[string]string{"XDG_RUNTIME_DIR": "/run/user/0", "BANGER_SOCKET": "/tmp/x.sock"}},
		{"home only", map[string]string{"HOME": "/home/dev"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"XDG_RUNTIME_DIR", "XDG_STATE_HOME", "BANGER_STATE_DIR", "BANGER_SOCKET"} {
				t.Setenv(k, "")
			}
			t.Setenv("HOME", "/root")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			p, err := FromEnv(os.Getenv)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := Socket(os.Getenv); err != nil || got != p.Socket {
				t.Errorf("Socket() = %s, %v; FromEnv says %s", got, err, p.Socket)
			}
		})
	}
	t.Run("runtime dir without home", func(t *testing.T) {
		for _, k := range []string{"HOME", "XDG_STATE_HOME", "BANGER_STATE_DIR", "BANGER_SOCKET"} {
			t.Setenv(k, "")
		}
		t.Setenv("XDG_RUNTIME_DIR", "/run/user/7")
		if got, err := Socket(os.Getenv); err != nil || got != "/run/user/7/banger/bangerd.sock" {
			t.Errorf("Socket() = %s, %v", got, err)
		}
	})
}
