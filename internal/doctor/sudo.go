package doctor

import (
	"fmt"
	"strings"

	"banger/internal/hostcap"
)

// InstalledBangerd is where `sudo make install` puts bangerd (PREFIX
// /usr/local), the path the README's sudoers line names.
const InstalledBangerd = "/usr/local/bin/bangerd"

// sudoRuleCheck guards the sudoers rule itself. As a user other than
// root, bangerd reaches root through `sudo -n BANGERD priv ...`, so a
// rule for a binary the user could replace (a file in their clone, or in
// any directory they or a group could write) is passwordless root for
// every process of theirs. The binary and each directory above it must
// be root's alone (hostcap.RootOnlyChain).
func sudoRuleCheck(p hostcap.Probes, bangerd string) Check {
	const name = "sudo rule"
	if p.Geteuid() == 0 {
		return Check{Name: name, Status: StatusOK, Detail: "running as root: no sudo rule is used"}
	}
	user, _ := hostcap.CurrentUser(p)
	fix := fmt.Sprintf("install root-owned copies with `make build && sudo make install` (to /usr/local), start the installed banger, "+
		"and allow exactly that binary in /etc/sudoers.d/banger: `%s ALL=(root) NOPASSWD: %s priv *`", user, InstalledBangerd)
	if bangerd == "" {
		return Check{Name: name, Status: StatusWarn, Detail: "the path of bangerd is unknown: cannot check what sudo runs", Fix: fix}
	}
	if p.Owner == nil {
		return Check{Name: name, Status: StatusWarn, Detail: "cannot inspect " + bangerd + " on this host", Fix: fix}
	}
	problems := hostcap.RootOnlyChain(p, bangerd)
	if len(problems) == 0 {
		return Check{Name: name, Status: StatusOK, Detail: bangerd + " and every directory above it are root's alone: safe to name in sudoers"}
	}
	const shown = 3
	more := ""
	if len(problems) > shown {
		more = fmt.Sprintf(" (and %d more)", len(problems)-shown)
		problems = problems[:shown]
	}
	return Check{Name: name, Status: StatusFail,
		Detail: fmt.Sprintf("sudo runs %s as root, but a process of yours could replace it: %s%s; a sudoers rule for it is passwordless root for any of your processes",
			bangerd, strings.Join(problems, "; "), more),
		Fix: fix}
}

// sudoersPath is the bangerd path a sudoers rule should name: the
// running one when only root can replace it, else the installed one.
func sudoersPath(p hostcap.Probes, bangerd string) string {
	if bangerd != "" && p.Owner != nil && len(hostcap.RootOnlyChain(p, bangerd)) == 0 {
		return bangerd
	}
	return InstalledBangerd
}
