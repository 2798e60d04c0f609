package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/units"
)

// newVMSnapshotCmd is `vm snapshot VM` and its list and rm subcommands.
func newVMSnapshotCmd(a *app) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "snapshot VM",
		Short: "Save a running VM's memory and disks as a named snapshot to make new VMs from",
		Long: "snapshot freezes the VM, saves its memory, device state and disks as a named snapshot\n" +
			"(kept in the VM's directory, deleted with it) and lets it run on with its clock corrected.\n" +
			"`banger vm create --from VM@SNAPSHOT` (or vm run --from) makes a new VM from it: its\n" +
			"processes, sessions and files as they were, with the new VM's own name, disks, address,\n" +
			"MAC, ssh host keys and agent token.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			ref, err := c.TakeSnapshot(ctx, args[0], api.SnapshotRequest{Name: name})
			if err != nil {
				return err
			}
			s, err := followResult[api.Snapshot](ctx, a, c, ref, "snapshot")
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, s)
			}
			fmt.Fprintln(a.streams.Out, s.Ref)
			fmt.Fprintf(a.streams.ErrOut, "make a VM from it with: banger vm create --from %s\n", s.Ref)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "snapshot name (lowercase letters, digits, hyphens; snap-N when empty)")
	cmd.AddCommand(newSnapshotListCmd(a), newSnapshotRmCmd(a))
	return cmd
}

func newSnapshotListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list [VM]",
		Aliases: []string{"ls"},
		Short:   "List the snapshots of one VM or of all",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ref := ""
			if len(args) == 1 {
				ref = args[0]
			}
			snaps, err := c.ListSnapshots(cmd.Context(), ref)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, snaps)
			}
			return writeSnapshotTable(a.streams.Out, snaps, time.Now())
		},
	}
}

// writeSnapshotTable renders snapshots; an unreadable one shows dashes.
func writeSnapshotTable(w io.Writer, snaps []api.Snapshot, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tIMAGE\tVCPU\tMEMORY\tDISK\tSTATE\tSESSIONS\tAGE")
	for _, s := range snaps {
		if s.CreatedAt.IsZero() {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\tunreadable\n", s.Ref)
			continue
		}
		img := s.Image
		if img == "" {
			img = units.ShortID(s.ImageID) + " (gone)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d MiB\t%s\t%s\t%d\t%s\n", s.Ref, img, s.Spec.VCPU, s.Spec.MemoryMiB,
			units.FormatSize(s.Spec.DiskBytes), units.FormatSize(s.StateBytes), s.Sessions, age(s.CreatedAt, now))
	}
	return tw.Flush()
}

func newSnapshotRmCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "rm VM@SNAPSHOT...",
		Aliases: []string{"delete"},
		Short:   "Remove snapshots",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			for _, ref := range args {
				vm, snap, ok := strings.Cut(ref, "@")
				if !ok || vm == "" || snap == "" {
					errs = append(errs, fmt.Errorf("%q: want VM@SNAPSHOT", ref))
					continue
				}
				if err := c.DeleteSnapshot(cmd.Context(), vm, snap); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", ref, err))
					continue
				}
				fmt.Fprintln(a.streams.Out, ref)
			}
			return errors.Join(errs...)
		},
	}
}

// newVMForkCmd is `vm fork VM -n N`.
func newVMForkCmd(a *app) *cobra.Command {
	var n int
	var prefix string
	cmd := &cobra.Command{
		Use:   "fork VM",
		Short: "Make live copies of a running VM: processes, sessions and files carry over",
		Long: "fork snapshots the running VM once and makes N new VMs from it, named PREFIX-1 to\n" +
			"PREFIX-N (PREFIX is the VM's name unless --name says otherwise). Each copy has its own\n" +
			"disks, address, MAC, DNS name, ssh host keys and agent token; its processes and sessions\n" +
			"continue where the source's were. With a workspace, `banger vm workspace pull COPY`\n" +
			"brings each copy's commits back as its own branch, banger/COPY. The source runs on.\n" +
			"Either every copy is made or none is.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			ref, err := c.ForkVM(ctx, args[0], api.ForkRequest{Count: n, Prefix: prefix})
			if err != nil {
				return err
			}
			vms, err := followResult[[]api.VM](ctx, a, c, ref, "copies")
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, vms)
			}
			for _, v := range vms {
				fmt.Fprintln(a.streams.Out, v.Name)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&n, "count", "n", 1, "how many copies")
	cmd.Flags().StringVar(&prefix, "name", "", "name prefix of the copies (default: the VM's name)")
	return cmd
}
