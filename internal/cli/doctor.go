package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"banger/internal/api"
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
				renderDoctor(a.streams.Out, rep)
			}
			if !rep.OK {
				return &exitError{code: 1}
			}
			return nil
		},
	}
}

// doctorReport asks bangerd for its host checks: the daemon is where VMs
// run and where the probes live. Only what must hold before a daemon
// exists is checked here: the config loads (a failure is a check of its
// own, and the daemon's checks follow if one answers) and bangerd can be
// found and started (a failure is the last check).
func (a *app) doctorReport(cmd *cobra.Command) api.DoctorReport {
	var pre []api.DoctorCheck
	if _, err := a.config(); err != nil {
		pre = append(pre, api.DoctorCheck{Name: "config", Status: api.CheckFail, Detail: err.Error(),
			Fix: "fix the file (see the README's config reference) or move it away"})
	}
	rep, err := a.daemonDoctor(cmd)
	if err != nil {
		rep = api.DoctorReport{Checks: []api.DoctorCheck{{Name: "bangerd", Status: api.CheckFail,
			Detail: fmt.Sprintf("cannot ask bangerd for the host checks: %v", err),
			Fix:    fmt.Sprintf("see `banger daemon logs` (%s); build bangerd or set %s", a.paths.LogFile, EnvBangerdBin)}}}
	}
	rep.Checks = append(pre, rep.Checks...)
	rep.OK = len(pre) == 0 && err == nil && rep.OK
	return rep
}

func (a *app) daemonDoctor(cmd *cobra.Command) (api.DoctorReport, error) {
	c, err := a.client(cmd.Context())
	if err != nil {
		return api.DoctorReport{}, err
	}
	return c.Doctor(cmd.Context())
}

// renderDoctor writes one line per check ("ok   kvm          detail") with
// fix hints indented under the failing or warning line.
func renderDoctor(w io.Writer, r api.DoctorReport) {
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-4s %-*s  %s\n", c.Status, width, c.Name, c.Detail)
		if c.Fix != "" && c.Status != api.CheckOK {
			fmt.Fprintf(w, "%*s  fix: %s\n", 5+width, "", c.Fix)
		}
	}
}
