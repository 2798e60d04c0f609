package vmm

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// Detach prepares cmd to run as a VMM that outlives the daemon: its own
// session (no signal from the daemon's terminal or process group reaches
// it), stdin from /dev/null, stdout and stderr appended to logPath. The
// returned file must be closed by the caller once cmd has started.
func Detach(cmd *exec.Cmd, logPath string) (*os.File, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open vmm log %s: %w", logPath, err)
	}
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return logf, nil
}
