package hostcap

import (
	"errors"
	"io/fs"
	"testing"
)

func TestFindJailer(t *testing.T) {
	p := Probes{LookPath: func(f string) (string, error) {
		if f == "jailer" || f == "/opt/fc/jailer" {
			return "/usr/local/bin/" + f, nil
		}
		return "", fs.ErrNotExist
	}}
	if got, err := FindJailer(p, ""); err != nil || got != "/usr/local/bin/jailer" {
		t.Errorf("on PATH: %q, %v", got, err)
	}
	if _, err := FindJailer(p, "none"); !errors.Is(err, ErrJailerOff) {
		t.Errorf("none: %v, want ErrJailerOff", err)
	}
	if _, err := FindJailer(p, "/missing/jailer"); err == nil {
		t.Error("a missing jailer was found")
	}
}
