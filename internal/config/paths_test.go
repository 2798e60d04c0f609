package config

import "testing"

func TestConfig_SSHKeyPath(t *testing.T) {
	t.Setenv("HOME", "/home/u")
	p := Paths{SSHDir: "/d/ssh"}
	for _, tt := range []struct{ key, want string }{
		{"", "/d/ssh/id_ed25519"},
		{"~/.ssh/id", "/home/u/.ssh/id"},
		{"/k/id", "/k/id"},
	} {
		c := Default()
		c.SSHKey = tt.key
		got, err := c.SSHKeyPath(p)
		if err != nil || got != tt.want {
			t.Errorf("SSHKeyPath(%q) = %q, %v; want %q", tt.key, got, err, tt.want)
		}
	}
}
