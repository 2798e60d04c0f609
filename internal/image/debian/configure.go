package debian

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/guestcontract"
)

// sshdConfig is /etc/ssh/sshd_config.d/banger.conf: keys only.
const sshdConfig = `# banger: root logs in with the key banger injects; no passwords.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
`

// Configure prepares an unpacked root filesystem for the guest contract:
// banger-agent installed at guestcontract.AgentPath and its unit enabled, sshd
// limited to keys and started per connection from a socket (ssh.service
// disabled), no ssh host keys (the agent makes them per VM), root's
// password locked, an empty machine-id (systemd makes one per boot), a
// placeholder hostname, an empty fstab (the initramfs sets up the overlay
// root), no resolv.conf from the build host, and no first-boot wizard or
// periodic apt runs or e2scrub.
func Configure(tree, agentBin string, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	step := func(format string, args ...any) { fmt.Fprintf(log, "configure: "+format+"\n", args...) }

	step("install %s", guestcontract.AgentPath)
	dst := filepath.Join(tree, guestcontract.AgentPath)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := copyFile(agentBin, dst, 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}

	step("enable %s", guestcontract.AgentUnitName)
	if err := installUnit(tree, guestcontract.AgentUnitName, guestcontract.AgentUnit); err != nil {
		return err
	}

	step("sshd: keys only, no host keys")
	if err := writeFile(tree, "/etc/ssh/sshd_config.d/banger.conf", sshdConfig, 0o644); err != nil {
		return err
	}
	step("sshd: one per connection from %s, ssh.service disabled", guestcontract.SSHSocketName)
	if err := writeFile(tree, guestcontract.UnitDir+"/"+guestcontract.SSHServiceName, guestcontract.SSHServiceUnit, 0o644); err != nil {
		return err
	}
	if err := installUnit(tree, guestcontract.SSHSocketName, guestcontract.SSHSocketUnit); err != nil {
		return err
	}
	for _, l := range []string{"multi-user.target.wants/ssh.service", "sshd.service"} {
		if err := os.Remove(filepath.Join(tree, guestcontract.UnitDir, l)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("disable ssh.service: %w", err)
		}
	}
	keys, _ := filepath.Glob(filepath.Join(tree, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return fmt.Errorf("remove %s: %w", k, err)
		}
	}

	step("lock root's password")
	if err := lockRoot(filepath.Join(tree, "etc/shadow")); err != nil {
		return err
	}

	step("machine-id, hostname, hosts, fstab, resolv.conf")
	files := []struct {
		path, data string
	}{
		{"/etc/machine-id", ""},
		{"/etc/hostname", "banger\n"},
		{"/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tbanger\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"},
		{"/etc/fstab", "# banger: the initramfs mounts the root (an overlay) and /root; nothing else to mount.\n"},
	}
	for _, f := range files {
		if err := writeFile(tree, f.path, f.data, 0o644); err != nil {
			return err
		}
	}
	// A symlink (systemd-resolved's stub) is kept; a file is the build
	// host's or the build engine's and must not reach guests.
	rc := filepath.Join(tree, "etc/resolv.conf")
	if fi, err := os.Lstat(rc); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		os.Remove(rc)
		if err := writeFile(tree, "/etc/resolv.conf", "# banger-agent writes the VM's resolver here at boot.\n", 0o644); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(tree, "var/lib/dbus/machine-id"))

	step("mask generators %s", strings.Join(maskedGenerators, ", "))
	for _, g := range maskedGenerators {
		if err := symlink(tree, "/etc/systemd/system-generators/"+g, "/dev/null"); err != nil {
			return err
		}
	}

	step("mask %s, disable apt timers", strings.Join(maskedUnits, ", "))
	for _, u := range maskedUnits {
		if err := symlink(tree, "/etc/systemd/system/"+u, "/dev/null"); err != nil {
			return err
		}
	}
	for _, t := range []string{"apt-daily.timer", "apt-daily-upgrade.timer"} {
		p := filepath.Join(tree, "etc/systemd/system/timers.target.wants", t)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("disable %s: %w", t, err)
		}
	}
	return nil
}

// maskedGenerators are systemd generators a guest never needs (no
// encrypted, verity or integrity volumes, no GPT auto-discovery, no
// hibernation, no boot counting, no offline updates, no SysV-only
// services): systemd runs every generator before it starts any unit,
// and under emulation each costs tens of milliseconds of that wait. A
// /dev/null symlink in /etc/systemd/system-generators masks one.
var maskedGenerators = []string{
	"systemd-bless-boot-generator", "systemd-cryptsetup-generator", "systemd-gpt-auto-generator",
	"systemd-hibernate-resume-generator", "systemd-integritysetup-generator", "systemd-veritysetup-generator",
	"systemd-system-update-generator", "systemd-sysv-generator",
}

// maskedUnits never run in a guest: the first-boot wizard, and e2scrub's
// reaper and timer (scrubbing LVM snapshots of ext4 volumes a guest does
// not have; the reaper alone costs seconds of a TCG boot's CPU).
var maskedUnits = []string{"systemd-firstboot.service", "e2scrub_reap.service", "e2scrub_all.timer"}

// installUnit writes unit text to guestcontract.UnitDir/name and enables
// it the way `systemctl enable` does: a symlink in <target>.wants/ (or
// .requires/) for every WantedBy= (RequiredBy=) of its [Install] section.
func installUnit(tree, name, text string) error {
	unitPath := guestcontract.UnitDir + "/" + name
	if err := writeFile(tree, unitPath, text, 0o644); err != nil {
		return err
	}
	for _, l := range InstallLinks(text) {
		if err := symlink(tree, guestcontract.UnitDir+"/"+l+"/"+name, unitPath); err != nil {
			return err
		}
	}
	return nil
}

// InstallLinks returns the directories ("multi-user.target.wants") in
// which enabling a unit with this text puts its symlink.
func InstallLinks(unit string) []string {
	var out []string
	section := ""
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "[") {
			section = l
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section != "[Install]" {
			continue
		}
		suffix := ""
		switch strings.TrimSpace(k) {
		case "WantedBy":
			suffix = ".wants"
		case "RequiredBy":
			suffix = ".requires"
		default:
			continue
		}
		for _, t := range strings.Fields(v) {
			out = append(out, t+suffix)
		}
	}
	return out
}

// lockRoot sets root's password field in a shadow file to "*", which no
// password matches. Key-based ssh logins still work.
func lockRoot(shadow string) error {
	data, err := os.ReadFile(shadow)
	if err != nil {
		return fmt.Errorf("lock root: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	found := false
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) > 2 && f[0] == "root" {
			f[1] = "*"
			lines[i] = strings.Join(f, ":")
			found = true
		}
	}
	if !found {
		return errors.New("lock root: no root entry in /etc/shadow")
	}
	fi, err := os.Stat(shadow)
	if err != nil {
		return fmt.Errorf("lock root: %w", err)
	}
	if err := os.WriteFile(shadow, []byte(strings.Join(lines, "\n")), fi.Mode().Perm()); err != nil {
		return fmt.Errorf("lock root: %w", err)
	}
	return nil
}

// writeFile writes data to the guest path p inside tree, making parent
// directories; a symlink at p is replaced, never followed out of the tree.
func writeFile(tree, p, data string, perm os.FileMode) error {
	dst := filepath.Join(tree, p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if fi, err := os.Lstat(dst); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		os.Remove(dst)
	}
	if err := os.WriteFile(dst, []byte(data), perm); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return os.Chmod(dst, perm)
}

// symlink makes the guest path p inside tree a symlink to target
// (replacing whatever is there).
func symlink(tree, p, target string) error {
	dst := filepath.Join(tree, p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	os.Remove(dst)
	if err := os.Symlink(target, dst); err != nil {
		return fmt.Errorf("link %s: %w", p, err)
	}
	return nil
}

// AgentVersion runs `banger-agent version` and returns its first line.
func AgentVersion(ctx context.Context, agentBin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, agentBin, "version").Output()
	if err != nil {
		return "", fmt.Errorf("agent version %s: %w", agentBin, err)
	}
	line, _, _ := strings.Cut(string(bytes.TrimSpace(out)), "\n")
	if line == "" {
		return "", fmt.Errorf("agent version %s: empty output", agentBin)
	}
	return line, nil
}
