package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

func newDaemonCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Inspect and control bangerd",
		Args:  noArgs,
	}
	cmd.AddCommand(newDaemonStatusCmd(a), newDaemonStopCmd(a), newDaemonLogsCmd(a))
	return cmd
}

func newDaemonStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show bangerd's pid, version, paths and what it manages (starts it if needed)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, st)
			}
			return printFields(a.streams.Out, statusRows(st, time.Now()))
		},
	}
}

func statusRows(st api.Status, now time.Time) [][2]string {
	cfg := st.ConfigFile
	if cfg == "" {
		cfg = "(none: defaults)"
	}
	dns := st.DNSListen
	if dns == "" {
		dns = "not serving"
	}
	return [][2]string{
		{"bangerd", fmt.Sprintf("running (pid %d, up %s)", st.PID, formatDuration(now.Sub(st.StartedAt).Round(time.Second)))},
		{"version", fmt.Sprintf("%s (built %s)", st.Version, stampString(st.BuildStamp))},
		{"socket", st.Socket},
		{"state dir", st.StateDir},
		{"log", st.LogFile},
		{"config", cfg},
		{"dns", dns},
		{"vms", strconv.Itoa(st.VMs)},
		{"images", strconv.Itoa(st.Images)},
		{"operations", fmt.Sprintf("%d running", st.Operations)},
	}
}

// daemonStopResult is the output of `daemon stop --json`; Stopped is false
// when no daemon was running.
type daemonStopResult struct {
	Stopped bool `json:"stopped"`
	PID     int  `json:"pid,omitempty"`
}

func newDaemonStopCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd gracefully (running operations roll back; VMs keep running)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, v := a.runningClient(ctx)
			if c == nil {
				if a.jsonOut {
					return printJSON(a.streams.Out, daemonStopResult{})
				}
				fmt.Fprintln(a.streams.Out, "bangerd is not running")
				return nil
			}
			if err := stopDaemon(ctx, c, v.PID); err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, daemonStopResult{Stopped: true, PID: v.PID})
			}
			fmt.Fprintf(a.streams.Out, "bangerd stopped (pid %d)\n", v.PID)
			return nil
		},
	}
}

func newDaemonLogsCmd(a *app) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Print bangerd's log (JSON lines with --json)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				// The log explains why the daemon would not start.
				if f, ferr := os.Open(a.paths.LogFile); ferr == nil {
					defer f.Close()
					fmt.Fprintf(a.streams.ErrOut, "bangerd is not running; showing %s\n", a.paths.LogFile)
					_ = a.copyLog(f)
				}
				return err
			}
			body, err := c.DaemonLogs(ctx, follow)
			if err != nil {
				return err
			}
			defer body.Close()
			if err := a.copyLog(body); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines as they are written")
	return cmd
}

// copyLog copies JSON log lines to Out: verbatim with --json, else as
// "15:04:05.000 INFO  message key=value ...".
func (a *app) copyLog(r io.Reader) error {
	if a.jsonOut {
		_, err := io.Copy(a.streams.Out, r)
		return err
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintln(a.streams.Out, formatLogLine(sc.Bytes()))
	}
	return sc.Err()
}

// formatLogLine renders one slog JSON record for people; other lines
// (a panic, a startup error) are returned unchanged.
func formatLogLine(line []byte) string {
	var rec map[string]any
	if err := json.Unmarshal(line, &rec); err != nil {
		return string(line)
	}
	ts, _ := rec["time"].(string)
	level, _ := rec["level"].(string)
	msg, _ := rec["msg"].(string)
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		ts = t.Local().Format("15:04:05.000")
	}
	delete(rec, "time")
	delete(rec, "level")
	delete(rec, "msg")
	keys := make([]string, 0, len(rec))
	for k := range rec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s", ts, level, msg)
	for _, k := range keys {
		v := rec[k]
		var s string
		switch v := v.(type) {
		case string:
			s = v
			if strings.ContainsAny(s, " \t\"=") {
				s = strconv.Quote(s)
			}
		default:
			j, _ := json.Marshal(v)
			s = string(j)
		}
		fmt.Fprintf(&b, " %s=%s", k, s)
	}
	return b.String()
}
