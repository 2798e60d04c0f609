package config

import (
	"os"
	"testing"
)

func TestFileSync_Resolve(t *testing.T) {
	tests := []struct {
		name        string
		f           FileSync
		home        string
		host, guest string
		mode        os.FileMode
		wantErr     bool
	}{
		{"tilde both", FileSync{Host: "~/.aws", Guest: "~/.aws"}, "/home/u", "/home/u/.aws", "/root/.aws", 0o600, false},
		{"absolute host, /root guest, mode", FileSync{Host: "/etc/gitconfig", Guest: "/root/.gitconfig", Mode: "0644"}, "/home/u", "/etc/gitconfig", "/root/.gitconfig", 0o644, false},
		{"mode without leading zero", FileSync{Host: "~/bin/s", Guest: "~/bin/s", Mode: "755"}, "/h", "/h/bin/s", "/root/bin/s", 0o755, false},
		{"mode 0o prefix", FileSync{Host: "~/bin/s", Guest: "~/bin/s", Mode: "0o700"}, "/h", "/h/bin/s", "/root/bin/s", 0o700, false},
		{"cleans slashes", FileSync{Host: "~//a/./b/", Guest: "~/a//b/"}, "/h/", "/h/a/b", "/root/a/b", 0o600, false},
		{"absolute host ignores home", FileSync{Host: "/srv/x", Guest: "~/x"}, "", "/srv/x", "/root/x", 0o600, false},
		{"tilde host needs home", FileSync{Host: "~/x", Guest: "~/x"}, "", "", "", 0, true},
		{"relative home", FileSync{Host: "~/x", Guest: "~/x"}, "home", "", "", 0, true},
		{"invalid entry", FileSync{Host: "~/x", Guest: "/etc/x"}, "/h", "", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, g, m, err := tt.f.Resolve(tt.home)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Resolve = %q %q %v, want error", h, g, m)
				}
				return
			}
			if err != nil || h != tt.host || g != tt.guest || m != tt.mode {
				t.Errorf("Resolve = %q %q %#o %v; want %q %q %#o", h, g, m, err, tt.host, tt.guest, tt.mode)
			}
		})
	}
}

func TestParseFileMode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want os.FileMode
		ok   bool
	}{
		{"0755", 0o755, true}, {"755", 0o755, true}, {"0o755", 0o755, true}, {"0O644", 0o644, true},
		{"0777", 0o777, true}, {"0", 0, true}, {"600", 0o600, true},
		{"999", 0, false}, {"abc", 0, false}, {"", 0, false}, {"1777", 0, false}, {"0o", 0, false},
		{"0x1ed", 0, false}, {"07777", 0, false}, {"+644", 0, false}, {" 644", 0, false},
	} {
		got, err := ParseFileMode(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseFileMode(%q) = %#o, %v; want %#o ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
