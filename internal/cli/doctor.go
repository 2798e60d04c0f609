package cli

import (
	"github.com/spf13/cobra"

	"banger/internal/doctor"
)

func newDoctorCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run banger VMs, with a fix for each problem",
		Long: "doctor checks KVM, the VMMs, image tools, networking tools, privileges, disk space,\n" +
			"the default image and the VM defaults. It exits 1 when a check fails.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep := a.doctorReport(cmd)
			if a.jsonOut {
				if err := printJSON(a.streams.Out, rep); err != nil {
					return err
				}
			} else {
				rep.Render(a.streams.Out)
			}
			if !rep.OK {
				return &exitError{code: 1}
			}
			return nil
		},
	}
}

// doctorReport runs the checks in process. A config that does not load
// is reported as a failed check of its own; the rest run on defaults.
func (a *app) doctorReport(cmd *cobra.Command) doctor.Report {
	cfg, cfgErr := a.config()
	in := doctor.Input{Config: cfg, Paths: a.paths, Host: a.host}
	if bin, err := findBangerd(); err == nil {
		in.BangerdPath = bin
	}
	if cfgErr == nil {
		in.DefaultImage = a.defaultImageProbe(cmd.Context())
	}
	rep := doctor.Run(cmd.Context(), doctor.HostProbes(), in)
	if cfgErr != nil {
		check := doctor.Check{Name: "config", Status: doctor.StatusFail, Detail: cfgErr.Error(),
			Fix: "fix the file (see the README's config reference) or move it away"}
		rep.Checks = append([]doctor.Check{check}, rep.Checks...)
		rep.OK = false
	}
	return rep
}
