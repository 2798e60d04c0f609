package hostcap

import (
	"errors"
	"fmt"
)

// JailerBin is the jailer's name on PATH; "none" in config turns the
// jailer off.
const (
	JailerBin  = "jailer"
	JailerNone = "none"
)

// ErrJailerOff reports a jailer turned off in config (jailer_bin = "none").
var ErrJailerOff = errors.New(`jailer_bin = "none"`)

// FindJailer locates Firecracker's jailer: bin ("" means JailerBin on
// PATH). It returns ErrJailerOff for bin "none". The jailer is used only
// by a bangerd running as root, which FindJailer does not check.
func FindJailer(p Probes, bin string) (string, error) {
	if bin == JailerNone {
		return "", ErrJailerOff
	}
	if bin == "" {
		bin = JailerBin
	}
	path, err := p.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s not found", bin)
	}
	return path, nil
}
