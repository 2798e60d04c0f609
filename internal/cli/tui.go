package cli

import (
	"errors"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/config"
	"banger/internal/tui"
)

// newTUICmd is `banger tui`, the live dashboard of VMs, images and
// sessions (package tui).
func newTUICmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "tui",
		Short: "Live terminal dashboard: VMs, images, sessions and console logs, with actions",
		Long: "A live dashboard over bangerd: VMs with the CPU and memory use of their VMM,\n" +
			"images, the sessions and console of the selected VM. Create, start, stop, restart,\n" +
			"delete, ssh, attach and follow long operations (cancellable). Press ? for the keys.\n" +
			"NO_COLOR turns colours off.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			in, inOK := a.streams.In.(*os.File)
			out, outOK := a.streams.Out.(*os.File)
			if !inOK || !outOK || !term.IsTerminal(int(in.Fd())) || !term.IsTerminal(int(out.Fd())) {
				return errors.New("banger tui needs a terminal (use `banger vm list` in scripts)")
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if cfg == nil {
				cfg = config.Default()
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			d := config.ResolveVMDefaults(cfg, a.host)
			self, _ := os.Executable()
			attach, _, err := cmd.Root().Find([]string{"vm", "session", "attach"})
			hasAttach := err == nil && attach.Name() == "attach" && attach.HasParent() && attach.Parent().Name() == "session"
			return tui.Run(cmd.Context(), tui.Options{
				Client: c,
				Defaults: tui.CreateDefaults{
					Image: cfg.DefaultImage, VMM: cfg.VMM,
					VCPU: d.VCPU, MemoryMiB: d.MemoryMiB, DiskBytes: d.DiskBytes,
				},
				Self:          self,
				AttachCommand: hasAttach,
			}, in, out)
		},
	}
}
