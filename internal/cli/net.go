package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/termsafe"
)

// netModes is how the CLI names the egress modes in errors and help.
const netModes = api.NetOpen + ", " + api.NetAllow + " or " + api.NetNone

// netLogPoll is how often `vm net log -f` asks for new flows.
const netLogPoll = 500 * time.Millisecond

// checkNetMode refuses a mode other than open, allow and none; flag names
// the flag or argument in the error.
func checkNetMode(flag, mode string) error {
	switch mode {
	case api.NetOpen, api.NetAllow, api.NetNone:
		return nil
	}
	return fmt.Errorf("%s %q: want %s", flag, mode, netModes)
}

// netRequest turns --net and --allow into the create request's Net and
// Allow: --allow alone means --net allow, and rules with --net open or
// none are refused. The rules themselves are the daemon's to check.
func netRequest(mode string, allow []string) (string, []string, error) {
	if mode != "" {
		if err := checkNetMode("--net", mode); err != nil {
			return "", nil, err
		}
	}
	if len(allow) == 0 {
		return mode, nil, nil
	}
	switch mode {
	case "":
		mode = api.NetAllow
	case api.NetOpen, api.NetNone:
		return "", nil, fmt.Errorf("--allow with --net %s: only --net %s takes rules (drop --net, or drop --allow)", mode, api.NetAllow)
	}
	return mode, allow, nil
}

// newVMNetCmd is `vm net NAME [allow|deny|mode ...]` and its log
// subcommand.
func newVMNetCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "net NAME [allow RULE... | deny RULE... | mode open|allow|none]",
		Short: "Show or change what a VM may reach on the network (egress policy)",
		Long: "net prints a VM's egress policy: its mode, whether the host enforces it now, its allow\n" +
			"rules and how many flows it let through or refused since bangerd started. With an\n" +
			"action it changes the policy first; a running VM gets the new policy at once.\n" +
			"\n" +
			"Modes: open (the internet, less private ranges and the host), allow (only the allow\n" +
			"rules), none (nothing beyond the host's DNS for .vm names).\n" +
			"\n" +
			"  allow RULE...   add rules (and switch an open or none VM to allow)\n" +
			"  deny RULE...    remove rules from the allow list\n" +
			"  mode MODE       set the mode; the allow list is kept for a later switch back\n" +
			"\n" +
			"A rule is HOST, *.DOMAIN, IPV4 or CIDR, each with an optional :PORT or :LOW-HIGH, or\n" +
			"@PRESET (github, model-apis, or one of the config's [network.presets]).\n" +
			"\n" +
			"`banger vm net log NAME` prints the flow log. Since log is that subcommand, a VM\n" +
			"named log is reached here by its id (banger vm show log --json | jq -r .id).",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("name a VM: banger vm net NAME")}
			}
			if _, _, err := parseNetAction(args[1:]); err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch {
			case len(args) == 0:
				return a.names(toComplete, vmNames)
			case len(args) == 1:
				return completeFrom([]string{"allow", "deny", "mode"}, toComplete)
			case len(args) == 2 && args[1] == "mode":
				return completeFrom([]string{api.NetOpen, api.NetAllow, api.NetNone}, toComplete)
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ch, change, _ := parseNetAction(args[1:]) // checked by Args
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			var st api.NetStatus
			if change {
				st, err = c.ChangeNet(ctx, args[0], ch)
			} else {
				st, err = c.NetStatus(ctx, args[0])
			}
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, st)
			}
			return writeNetStatus(a.streams.Out, st)
		},
	}
	cmd.AddCommand(newNetLogCmd(a))
	return cmd
}

// parseNetAction reads what follows the VM name of `vm net`: nothing (a
// read), or allow/deny with rules, or mode with one mode.
func parseNetAction(args []string) (ch api.NetChange, change bool, err error) {
	if len(args) == 0 {
		return api.NetChange{}, false, nil
	}
	switch verb, rest := args[0], args[1:]; verb {
	case "allow", "deny":
		if len(rest) == 0 {
			return api.NetChange{}, false, fmt.Errorf("%s: name at least one RULE (HOST, *.DOMAIN, IPV4, CIDR or @PRESET)", verb)
		}
		if verb == "allow" {
			return api.NetChange{Allow: rest}, true, nil
		}
		return api.NetChange{Deny: rest}, true, nil
	case "mode":
		if len(rest) != 1 {
			return api.NetChange{}, false, fmt.Errorf("mode: name one mode, %s", netModes)
		}
		if err := checkNetMode("mode", rest[0]); err != nil {
			return api.NetChange{}, false, err
		}
		return api.NetChange{Mode: rest[0]}, true, nil
	default:
		return api.NetChange{}, false, fmt.Errorf("unknown action %q: want allow, deny or mode (banger vm net log NAME prints the flow log)", verb)
	}
}

// completeFrom completes the words that start with toComplete.
func completeFrom(words []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	var out []cobra.Completion
	for _, w := range words {
		if strings.HasPrefix(w, toComplete) {
			out = append(out, w)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// writeNetStatus renders a policy and its counters, one allow rule a line.
func writeNetStatus(w io.Writer, st api.NetStatus) error {
	mode := dash(st.Policy.Mode)
	enforced := "yes"
	switch {
	case st.Enforced:
	case st.Policy.Mode == api.NetOpen:
		enforced = "no (open)"
	default:
		enforced = "no (applied when the VM runs)"
	}
	rows := [][2]string{{"vm", st.VM}, {"mode", mode}, {"enforced", enforced}}
	key := "allow"
	if st.Policy.Mode != api.NetAllow {
		key = "allow (unused)" // kept for a later switch back to allow
	}
	switch {
	case len(st.Policy.Allow) > 0:
		for i, r := range st.Policy.Allow {
			if i > 0 {
				key = ""
			}
			rows = append(rows, [2]string{key, r})
		}
	case st.Policy.Mode == api.NetAllow:
		rows = append(rows, [2]string{key, "(none: only .vm names)"})
	}
	if len(st.Policy.Secrets) > 0 {
		rows = append(rows, [2]string{"secrets", strings.Join(st.Policy.Secrets, ", ")})
	}
	rows = append(rows,
		[2]string{"allowed", strconv.FormatUint(st.Allowed, 10)},
		[2]string{"denied", strconv.FormatUint(st.Denied, 10)})
	return printFields(w, rows)
}

// maxShownRules is how many allow rules `vm show` lists on its net line.
const maxShownRules = 6

// formatPolicy is the one-line form of a policy for `vm show`:
// "allow (good.test, 203.0.113.0/24:443)".
func formatPolicy(p api.NetPolicy) string {
	if p.Mode == "" {
		return "-"
	}
	if len(p.Secrets) > 0 {
		q := p
		q.Secrets = nil
		return formatPolicy(q) + "; secrets " + strings.Join(p.Secrets, ", ")
	}
	rules := p.Allow
	more := 0
	if len(rules) > maxShownRules {
		rules, more = rules[:maxShownRules], len(rules)-maxShownRules
	}
	list := strings.Join(rules, ", ")
	if more > 0 {
		list += fmt.Sprintf(", +%d more", more)
	}
	switch {
	case p.Mode == api.NetAllow && len(p.Allow) == 0:
		return "allow (nothing)"
	case p.Mode == api.NetAllow:
		return "allow (" + list + ")"
	case len(p.Allow) > 0:
		return p.Mode + " (unused allow rules: " + list + ")"
	}
	return p.Mode
}

func newNetLogCmd(a *app) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "log NAME [-f]",
		Short: "Print a VM's egress flow log: DNS answers and proxied connections, allowed or denied",
		Long: "log prints the flows bangerd logged for the VM (bounded; since bangerd started): time,\n" +
			"kind (dns, tls, http, proxy), verdict, name, address and the reason of a refusal. Names\n" +
			"and reasons come from the guest's traffic, so escape sequences and control characters\n" +
			"are removed before they reach your terminal. -f keeps printing new flows until Ctrl-C;\n" +
			"with --json, -f prints one JSON object per flow per line.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			if follow {
				ctx, stop := a.untilInterrupt(ctx)
				defer stop()
				return a.followNetLog(ctx, c, args[0])
			}
			lg, err := c.NetLog(ctx, args[0], 0)
			if err != nil {
				return err
			}
			a.noteLost(lg.Lost)
			if a.jsonOut {
				if lg.Flows == nil {
					lg.Flows = []api.Flow{}
				}
				return printJSON(a.streams.Out, lg)
			}
			fmt.Fprintln(a.streams.Out, flowHeader)
			return writeFlows(a.streams.Out, lg.Flows)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new flows until Ctrl-C")
	return cmd
}

// untilInterrupt returns ctx canceled by the first Ctrl-C (a signal on
// streams.Interrupt when that is set); stop releases the signal.
func (a *app) untilInterrupt(ctx context.Context) (_ context.Context, stop context.CancelFunc) {
	if a.streams.Interrupt == nil {
		return signal.NotifyContext(ctx, os.Interrupt)
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-a.streams.Interrupt:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// followNetLog prints the VM's flows, then new ones every netLogPoll,
// until ctx ends, which is not an error.
func (a *app) followNetLog(ctx context.Context, c *api.Client, ref string) error {
	tick := time.NewTicker(netLogPoll)
	defer tick.Stop()
	enc := json.NewEncoder(a.streams.Out)
	if !a.jsonOut {
		fmt.Fprintln(a.streams.Out, flowHeader)
	}
	var after uint64
	for {
		lg, err := c.NetLog(ctx, ref, after)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		a.noteLost(lg.Lost)
		if a.jsonOut {
			for _, f := range lg.Flows {
				if err := enc.Encode(f); err != nil {
					return fmt.Errorf("write json: %w", err)
				}
			}
		} else if err := writeFlows(a.streams.Out, lg.Flows); err != nil {
			return err
		}
		after = lg.Next
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// noteLost tells the user on stderr that flows fell out of the bounded log
// before they were read.
func (a *app) noteLost(n uint64) {
	if n > 0 {
		fmt.Fprintf(a.streams.ErrOut, "note: %d flows fell out of the bounded flow log before they were read\n", n)
	}
}

// flowFormat lays a flow out in columns wide enough for most values, so
// lines printed in different polls of -f line up.
const flowFormat = "%-19s  %-5s  %-7s  %-32s  %-21s  %s"

// flowHeader names the columns of writeFlows.
var flowHeader = strings.TrimRight(fmt.Sprintf(flowFormat, "TIME", "KIND", "VERDICT", "NAME", "ADDRESS", "REASON"), " ")

// writeFlows prints one line per flow. Names, addresses and reasons come
// from what the guest sent, so every string goes through termsafe.
func writeFlows(w io.Writer, flows []api.Flow) error {
	for _, f := range flows {
		addr := termsafe.Line(f.Addr)
		if addr != "" && f.Port != 0 {
			addr = net.JoinHostPort(addr, strconv.Itoa(f.Port))
		}
		line := fmt.Sprintf(flowFormat, f.Time.Local().Format(time.DateTime), termsafe.Line(f.Kind), termsafe.Line(f.Verdict),
			dash(termsafe.Line(f.Name)), dash(addr), termsafe.Line(f.Reason))
		if _, err := fmt.Fprintln(w, strings.TrimRight(line, " ")); err != nil {
			return err
		}
	}
	return nil
}
