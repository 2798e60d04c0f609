package debian

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"banger/internal/cmdrun"
)

// Run runs argv with its output copied to log, in its own process group,
// and returns a *cmdrun.Error carrying the output's tail when it fails.
// Cancelling ctx sends SIGTERM to the group (so a tool like mmdebstrap
// can undo its mounts) and SIGKILL to it after killGrace if it is still
// running.
func Run(ctx context.Context, log io.Writer, argv ...string) error {
	return runCmd(ctx, log, nil, argv...)
}

// runEnv is Run with extra environment variables.
func runEnv(ctx context.Context, log io.Writer, env []string, argv ...string) error {
	return runCmd(ctx, log, env, argv...)
}

// killGrace is how long a cancelled command gets between SIGTERM and
// SIGKILL.
const killGrace = 15 * time.Second

func runCmd(ctx context.Context, log io.Writer, env []string, argv ...string) error {
	if log == nil {
		log = io.Discard
	}
	fmt.Fprintf(log, "+ %s\n", strings.Join(argv, " "))
	return cmdrun.Cmd{
		Argv:      argv,
		Env:       append([]string{"LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}, env...),
		Log:       log,
		KillGrace: killGrace,
	}.Run(ctx)
}
