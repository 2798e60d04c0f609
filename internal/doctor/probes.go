package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// Probes are the doctor's only view of the host. HostProbes reads the
// real machine; tests fill the fields with table rows.
type Probes struct {
	ReadFile      func(path string) ([]byte, error)
	OpenReadWrite func(path string) error // opens path O_RDWR and closes it
	LookPath      func(file string) (string, error)
	Output        func(ctx context.Context, name string, args ...string) ([]byte, error) // stdout and stderr combined
	Geteuid       func() int
	FreeBytes     func(path string) (uint64, error) // bytes available to unprivileged users on path's filesystem
	Stat          func(path string) (os.FileInfo, error)
}

// HostProbes returns probes backed by the running host.
func HostProbes() Probes {
	return Probes{
		ReadFile: os.ReadFile,
		OpenReadWrite: func(path string) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			return f.Close()
		},
		LookPath: exec.LookPath,
		Output: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
			if err != nil {
				return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
			return out, nil
		},
		Geteuid: os.Geteuid,
		FreeBytes: func(path string) (uint64, error) {
			var st unix.Statfs_t
			if err := unix.Statfs(path, &st); err != nil {
				return 0, fmt.Errorf("statfs %s: %w", path, err)
			}
			return st.Bavail * uint64(st.Bsize), nil
		},
		Stat: os.Stat,
	}
}
