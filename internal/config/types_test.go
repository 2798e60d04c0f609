package config

import (
	"os"
	"testing"
)

func TestSize_UnmarshalText(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"8G", 8 << 30, true}, {"1.5G", 3 << 29, true}, {"4096", 4096, true},
		{"", 0, false}, {"8 gigs", 0, false}, {"-1G", 0, false},
	} {
		var s Size
		err := s.UnmarshalText([]byte(tt.in))
		if (err == nil) != tt.ok || s != tt.want {
			t.Errorf("Size.UnmarshalText(%q) = %d, %v; want %d ok=%v", tt.in, s, err, tt.want, tt.ok)
		}
	}
	if b, _ := Size(20 << 30).MarshalText(); string(b) != "20G" {
		t.Errorf("MarshalText = %q, want 20G", b)
	}
}

func TestFileMode_UnmarshalTextAndPerm(t *testing.T) {
	var m FileMode
	if err := m.UnmarshalText([]byte("0644")); err != nil || m.Perm(0o600) != 0o644 {
		t.Errorf("0644: %q %v", m, err)
	}
	if err := m.UnmarshalText([]byte("4755")); err == nil {
		t.Error("4755 accepted")
	}
	if got := FileMode("").Perm(DefaultFileSyncMode); got != DefaultFileSyncMode {
		t.Errorf("unset Perm = %#o", got)
	}
	if got := FileMode("0").Perm(DefaultFileSyncMode); got != os.FileMode(0) {
		t.Errorf("\"0\" Perm = %#o, want 0 (set, not the default)", got)
	}
}
