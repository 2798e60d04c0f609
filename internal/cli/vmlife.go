package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/units"
)

// lifecycleCmds are the vm subcommands that list, inspect, start, stop
// and delete VMs.
func lifecycleCmds(a *app) []*cobra.Command {
	return []*cobra.Command{
		newVMListCmd(a), newVMShowCmd(a),
		newVMStartCmd(a),
		newVMOpCmd(a, "restart", "Stop and boot a VM again", (*api.Client).RestartVM),
		newVMStopCmd(a), newVMDeleteCmd(a),
		newVMPauseCmd(a),
		newVMSnapshotCmd(a), newVMForkCmd(a),
		newVMOpCmd(a, "resume", "Let a paused VM run again, or restore a suspended one", (*api.Client).ResumeVM),
		newVMOpCmd(a, "suspend", "Save a VM's memory to its directory and end its VMM (vm start or resume restores it)", (*api.Client).SuspendVM),
	}
}

func newVMListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			vms, err := c.ListVMs(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, vms)
			}
			return writeVMTable(a.streams.Out, vms, time.Now())
		},
	}
}

// writeVMTable renders VMs as a table: the image is shown by name, or by
// a short id when its image is gone.
func writeVMTable(w io.Writer, vms []api.VM, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tIMAGE\tIP\tDNS\tVCPU\tMEMORY\tDISK\tAGE")
	for _, v := range vms {
		img := v.ImageName
		if img == "" {
			img = units.ShortID(v.ImageID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d MiB\t%s\t%s\n", v.Name, v.State, img, dash(v.IP), v.DNSName,
			v.Spec.VCPU, v.Spec.MemoryMiB, units.FormatSize(v.Spec.DiskBytes), age(v.CreatedAt, now))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newVMShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show one VM",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.GetVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, v)
			}
			img := v.ImageName
			if img == "" {
				img = units.ShortID(v.ImageID) + " (image gone)"
			}
			rows := [][2]string{
				{"name", v.Name}, {"id", v.ID}, {"state", v.State}, {"image", img}, {"vmm", v.VMM},
				{"spec", fmt.Sprintf("%d vcpu · %d MiB · %s disk", v.Spec.VCPU, v.Spec.MemoryMiB, units.FormatSize(v.Spec.DiskBytes))},
				{"ip", dash(v.IP)}, {"dns", v.DNSName}, {"mac", dash(v.MAC)}, {"net", formatPolicy(v.Net) + deniedNote(v.NetDenied)},
				{"dir", v.Dir}, {"console", v.Console},
				{"created", v.CreatedAt.Local().Format(time.DateTime)},
			}
			if v.PID != 0 {
				rows = append(rows, [2]string{"pid", fmt.Sprint(v.PID)})
			}
			if v.LastError != "" {
				rows = append(rows, [2]string{"last error", v.LastError})
			}
			return printFields(a.streams.Out, rows)
		},
	}
}

// newVMOpCmd makes a command that starts a VM operation (start, restart)
// and follows its stages.
func newVMOpCmd(a *app, verb, short string, start func(*api.Client, context.Context, string) (api.OperationRef, error)) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			ref, err := start(c, ctx, args[0])
			if err != nil {
				return err
			}
			vm, err := followResult[api.VM](ctx, a, c, ref, "vm")
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, vm)
			}
			fmt.Fprintf(a.streams.Out, "%s %s\n", vm.Name, vm.State)
			return nil
		},
	}
}

func newVMStartCmd(a *app) *cobra.Command {
	var cold bool
	cmd := newVMOpCmd(a, "start", "Boot a stopped VM, or restore a suspended one", func(c *api.Client, ctx context.Context, ref string) (api.OperationRef, error) {
		return c.StartVM(ctx, ref, api.StartVMRequest{Cold: cold})
	})
	cmd.Flags().BoolVar(&cold, "cold", false, "boot a suspended VM from its disks, discarding its saved memory")
	return cmd
}

func newVMPauseCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "pause NAME",
		Short: "Freeze a running VM's vCPUs; its memory stays in place (vm resume thaws it)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.PauseVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, vm)
			}
			fmt.Fprintf(a.streams.Out, "%s %s\n", vm.Name, vm.State)
			return nil
		},
	}
}

func newVMStopCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Shut a VM down (the guest first, then its VMM after a timeout)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.StopVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, vm)
			}
			fmt.Fprintf(a.streams.Out, "%s %s\n", vm.Name, vm.State)
			return nil
		},
	}
}

// deleteResult is one line of `vm delete --json`: each named VM, deleted
// or with the error that kept it.
type deleteResult struct {
	VM      string `json:"vm"`
	Deleted bool   `json:"deleted"`
	Error   string `json:"error,omitempty"`
}

func newVMDeleteCmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete VMs and everything they own (process, tap, address, DNS name, files)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			results := []deleteResult{}
			for _, ref := range args {
				if err := c.DeleteVM(cmd.Context(), ref, force); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", ref, err))
					results = append(results, deleteResult{VM: ref, Error: err.Error()})
					continue
				}
				results = append(results, deleteResult{VM: ref, Deleted: true})
				if !a.jsonOut {
					fmt.Fprintf(a.streams.Out, "deleted %s\n", ref)
				}
			}
			if a.jsonOut {
				if err := printJSON(a.streams.Out, results); err != nil {
					return err
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the record even when tearing down its resources fails")
	return cmd
}

// deniedNote is the "vm show" suffix counting refused flows.
func deniedNote(n uint64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d denied (vm net log)", n)
}
