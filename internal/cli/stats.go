package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/termsafe"
	"banger/internal/units"
)

func newStatsCmd(a *app) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "stats NAME...",
		Short: "Show live CPU, memory, load, disk and network figures of running VMs (all of them without NAME)",
		Long: `Show live figures of running VMs, measured over about a second: from each
guest's agent, CPU (share of its vCPUs busy), memory used of total, load,
used space of /root and of the root filesystem's writable layer, network
bytes per second; from the host, its VMM's CPU (percent of one host CPU)
and resident memory. --watch repeats until Ctrl-C.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if watch {
				var stop context.CancelFunc
				ctx, stop = a.untilInterrupt(ctx)
				defer stop()
			}
			for first := true; first || watch; first = false {
				st, err := c.Stats(ctx, args...)
				if err != nil {
					if watch && !first && errors.Is(ctx.Err(), context.Canceled) {
						return nil
					}
					return err
				}
				if a.jsonOut {
					if err := printJSONLine(a.streams.Out, st, watch); err != nil {
						return err
					}
					continue
				}
				if !first {
					fmt.Fprintln(a.streams.Out)
				}
				if err := writeStats(a.streams.Out, st); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "measure again and again until Ctrl-C")
	return cmd
}

// printJSONLine prints v as indented JSON, or on one line when lines (a
// stream of readings for a script).
func printJSONLine(w io.Writer, v any, lines bool) error {
	if !lines {
		return printJSON(w, v)
	}
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// writeStats renders the figures, one VM a row.
func writeStats(w io.Writer, st []api.VMStats) error {
	if len(st) == 0 {
		_, err := fmt.Fprintln(w, "no running VMs")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCPU\tMEM\tLOAD\tROOT\tOVERLAY\tRX/s\tTX/s\tVMM CPU\tVMM RSS")
	for _, s := range st {
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t%.0f%%\t%s\n", s.VM, s.VMMCPUPercent, units.FormatSize(s.VMMRSS))
			continue
		}
		fmt.Fprintf(tw, "%s\t%.0f%%\t%s/%s\t%.2f\t%s/%s\t%s/%s\t%s\t%s\t%.0f%%\t%s\n", s.VM,
			s.CPUPercent, size(s.MemUsed), size(s.MemTotal), s.Load[0],
			size(s.Root.Used), size(s.Root.Size), size(s.Overlay.Used), size(s.Overlay.Size),
			size(uint64(s.RxRate)), size(uint64(s.TxRate)), s.VMMCPUPercent, units.FormatSize(s.VMMRSS))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range st {
		if s.Error != "" {
			// The agent's error can carry what the guest sent.
			fmt.Fprintf(w, "%s: %s\n", s.VM, termsafe.Line(s.Error))
		}
	}
	return nil
}

// size renders a byte count the way the other commands do.
func size(n uint64) string {
	if n > 1<<62 {
		n = 1 << 62
	}
	return units.FormatSize(int64(n))
}
