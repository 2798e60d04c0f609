package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/buildinfo"
)

// versionOutput is `banger version --json`.
type versionOutput struct {
	Version    string           `json:"version"`
	BuildStamp time.Time        `json:"build_stamp"`
	Daemon     *api.VersionInfo `json:"daemon"` // null when bangerd is not running
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of banger (and of bangerd when it runs)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := versionOutput{Version: buildinfo.Version(), BuildStamp: buildinfo.BuildStamp()}
			_, out.Daemon = a.runningClient(cmd.Context())
			if a.jsonOut {
				return printJSON(a.streams.Out, out)
			}
			w := a.streams.Out
			fmt.Fprintf(w, "banger  %s (built %s)\n", out.Version, stampString(out.BuildStamp))
			if d := out.Daemon; d != nil {
				fmt.Fprintf(w, "bangerd %s (built %s, pid %d)\n", d.Version, stampString(d.BuildStamp), d.PID)
			} else {
				fmt.Fprintln(w, "bangerd not running")
			}
			return nil
		},
	}
}

func stampString(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}
