// Package firecracker drives Firecracker (1.8 or later) as a banger VMM
// through fcapi, a small typed client of Firecracker's HTTP API. Every
// Firecracker API call stays inside this package and fcapi.
//
// The driver keeps these guards: boot_args are exactly banger's command
// line (Spec.Cmdline, never reordered, deduplicated or extended); seccomp
// is always on (never --no-seccomp; --seccomp-filter when one is
// configured); no drive is the root device (the guest mounts its
// filesystems by label) and drives are added in Spec order; the process
// runs detached in its own session and gets no signal from the daemon;
// its handles go to Spec.OnSpawn the moment it exists, before the API
// socket is waited for (bounded); every API request uses a connection of
// its own, closed afterwards; on any failure during Start the process is
// killed and reaped; and Stop waits for the process to exit. Firecracker
// writes its own log to vmm.log, which FollowLog copies into the daemon's
// log.
package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"banger/internal/layout"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker/fcapi"
	"banger/internal/wait"
)

// DefaultBinary is looked up on PATH when Driver.Binary is empty.
const DefaultBinary = "firecracker"

// DefaultStartTimeout bounds how long Start waits for the API socket to
// answer.
const DefaultStartTimeout = 10 * time.Second

// ifaceID is the id of the one network interface. Saved snapshots carry
// it, so it never changes.
const ifaceID = "1"

// Driver starts Firecracker processes. Its zero value runs "firecracker"
// from PATH with Firecracker's default seccomp filter.
type Driver struct {
	// Binary is the firecracker binary (config firecracker_bin, or a name
	// on PATH).
	Binary string
	// SeccompFilter is an optional custom seccomp filter file; empty uses
	// Firecracker's built-in filter. Seccomp is never turned off.
	SeccompFilter string
	// LogLevel is Firecracker's log level (Error, Warning, Info, Debug);
	// "Info" when empty.
	LogLevel string
	// StartTimeout bounds the wait for the API socket;
	// DefaultStartTimeout when zero.
	StartTimeout time.Duration
	// Jailer, when set, runs every Firecracker under Firecracker's jailer
	// (see Jailer); nil runs it directly.
	Jailer *Jailer

	versions vmm.VersionCache // Version's answers, per binary on disk
}

var (
	_ vmm.Driver  = (*Driver)(nil)
	_ vmm.Cleaner = (*Driver)(nil)
)

// Name returns vmm.Firecracker.
func (d *Driver) Name() string { return vmm.Firecracker }

func (d *Driver) binary() (string, error) {
	bin := d.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("find firecracker binary %s: %w (set firecracker_bin or put firecracker on PATH)", bin, err)
	}
	return p, nil
}

// paths of the files Firecracker uses for s.
type paths struct {
	api, vsock, console, log, metrics string
}

func pathsOf(s vmm.Spec) paths {
	return paths{
		api:     filepath.Join(s.Dir, layout.APISocketFile),
		vsock:   filepath.Join(s.Dir, layout.VsockSocketFile),
		console: filepath.Join(s.Dir, layout.ConsoleLogFile),
		log:     filepath.Join(s.Dir, layout.VMMLogFile),
		metrics: filepath.Join(s.Dir, layout.MetricsFile),
	}
}

// Args returns the firecracker command line for s (argv[0] excluded):
// the API socket, the instance id and the seccomp choice.
func (d *Driver) Args(s vmm.Spec) []string {
	args := []string{"--api-sock", pathsOf(s).api, "--id", s.VMID}
	if d.SeccompFilter != "" {
		args = append(args, "--seccomp-filter", d.SeccompFilter)
	}
	return args
}

// Start boots s as a detached firecracker process (own session; stdout,
// which carries the guest serial console, and stderr to console.log;
// Firecracker's log to vmm.log) and returns after InstanceStart (or, with
// s.RestoreDir, the snapshot load) succeeded. On error the process is
// killed and waited for.
func (d *Driver) Start(ctx context.Context, s vmm.Spec) (vmm.Handles, error) {
	if err := s.Validate(); err != nil {
		return vmm.Handles{}, err
	}
	if s.Vmlinux == "" {
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: no kernel (vmlinux)", s.VMID)
	}
	if s.CID < 3 {
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: vsock cid %d < 3", s.VMID, s.CID)
	}
	bin, err := d.binary()
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
	}
	if s.RestoreDir != "" {
		if err := checkSnapshot(s.RestoreDir); err != nil {
			return vmm.Handles{}, fmt.Errorf("restore firecracker vm %s: %w", s.VMID, err)
		}
	}
	p := pathsOf(s)
	// fp and fspec are p and s as Firecracker sees them: the same paths, or
	// paths inside its jail.
	fp, fspec := p, s
	var jail, jid string
	if d.Jailer != nil {
		if jid, err = jailID(s.VMID); err != nil {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
		}
		if bin, err = filepath.Abs(bin); err != nil {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
		}
		real, err := filepath.EvalSymlinks(bin)
		if err != nil {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
		}
		jail = d.Jailer.jailRoot(real, jid)
		p.api, p.vsock = filepath.Join(jail, jailAPISocket), filepath.Join(jail, jailVsockSocket)
		fp.api, fp.vsock, fp.log, fp.metrics = "/"+jailAPISocket, "/"+jailVsockSocket, "/"+jailLog, "/"+jailMetrics
	}
	for _, sock := range []string{p.api, p.vsock} {
		if err := vmm.CheckSocketPath(sock); err != nil {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
		}
		// Firecracker refuses to bind an existing API socket, and PUT
		// /vsock (or a snapshot load) binds uds_path at once: remove what
		// a previous run left.
		if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: remove stale %s: %w", s.VMID, sock, err)
		}
	}
	// Firecracker opens its log and metrics files but does not create them.
	for _, f := range []string{p.log, p.metrics} {
		if err := touch(f); err != nil {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
		}
	}
	noteLogStart(p.log)

	cmd := exec.Command(bin, d.Args(s)...)
	if jail != "" {
		if fspec, err = d.Jailer.prepare(jail, s, p, d.SeccompFilter); err != nil {
			_ = d.Jailer.removeJail(vmm.Handles{Jail: jail})
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
		}
		cmd = exec.Command(d.Jailer.Binary, d.Jailer.args(bin, jid, d.SeccompFilter != "")...)
	}
	cmd.Dir = s.Dir
	logf, err := vmm.Detach(cmd, p.console)
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
	}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }() // reap while this process lives

	h := vmm.Handles{
		VMM:            vmm.Firecracker,
		PID:            cmd.Process.Pid,
		APISocket:      p.api,
		VsockSocket:    p.vsock,
		ConsoleLog:     p.console,
		VMMLog:         p.log,
		Tap:            s.Tap,
		AgentTransport: vmm.TransportVsock,
		Jail:           jail,
	}
	h.StartTime, err = vmm.ProcStartTime(h.PID)
	if err != nil {
		select {
		case <-exited: // reaped already: say why it ended
			err = fmt.Errorf("firecracker exited during start: %v", waitErr)
		default:
		}
	}
	if err == nil && s.OnSpawn != nil {
		err = s.OnSpawn(h)
	}
	if err == nil {
		err = d.waitAPI(ctx, p.api, exited, &waitErr)
	}
	if err == nil {
		c := fcapi.New(p.api)
		if s.RestoreDir != "" {
			err = d.restore(ctx, c, fp, fspec)
		} else {
			err = d.boot(ctx, c, fp, fspec)
		}
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		if d.Jailer != nil {
			_ = d.Jailer.removeJail(h)
		}
		if tail := vmm.LogTail(p.console); tail != "" {
			err = fmt.Errorf("%w; its output ends:\n%s", err, tail)
		}
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s (see %s and %s): %w", s.VMID, p.console, p.log, err)
	}
	return h, nil
}

// touch creates path (mode 0644) unless it exists, leaving its contents.
func touch(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return f.Close()
}

// waitAPI polls the API socket until Firecracker answers GET /, the
// process exits, or the start timeout passes.
func (d *Driver) waitAPI(ctx context.Context, socket string, exited <-chan struct{}, waitErr *error) error {
	timeout := d.StartTimeout
	if timeout == 0 {
		timeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := fcapi.New(socket).WithTimeout(time.Second)
	var last error
	err := wait.Until(ctx, 10*time.Millisecond, func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("firecracker exited during start: %v", *waitErr)
		default:
		}
		if _, err := os.Stat(socket); err != nil {
			last = err
			return false, nil
		}
		if _, err := c.DescribeInstance(ctx); err != nil {
			last = err
			return false, nil
		}
		return true, nil
	})
	if err != nil && err == ctx.Err() {
		return fmt.Errorf("wait for api socket %s: %w (last: %v)", socket, err, last)
	}
	return err
}

// logging configures Firecracker's log (vmm.log, with level words for
// FollowLog) and metrics files.
func (d *Driver) logging(ctx context.Context, c *fcapi.Client, p paths) error {
	level := d.LogLevel
	if level == "" {
		level = "Info"
	}
	yes, no := true, false
	if err := c.PutLogger(ctx, fcapi.Logger{LogPath: p.log, Level: level, ShowLevel: &yes, ShowLogOrigin: &no}); err != nil {
		return err
	}
	return c.PutMetrics(ctx, fcapi.Metrics{MetricsPath: p.metrics})
}

// boot configures a fresh process for s and starts the guest: logger,
// metrics, machine, boot source (banger's command line verbatim), drives
// in spec order with no root device, the tap, one vsock device, the
// entropy device, InstanceStart.
func (d *Driver) boot(ctx context.Context, c *fcapi.Client, p paths, s vmm.Spec) error {
	if err := d.logging(ctx, c, p); err != nil {
		return err
	}
	no := false
	if err := c.PutMachineConfig(ctx, fcapi.MachineConfiguration{VcpuCount: s.VCPU, MemSizeMib: s.MemoryMiB, Smt: &no}); err != nil {
		return err
	}
	if err := c.PutBootSource(ctx, fcapi.BootSource{KernelImagePath: s.Vmlinux, InitrdPath: s.Initrd, BootArgs: s.Cmdline}); err != nil {
		return err
	}
	for _, dr := range s.Drives {
		ro := dr.ReadOnly
		if err := c.PutDrive(ctx, fcapi.Drive{DriveID: dr.ID, PathOnHost: dr.Path, IsReadOnly: &ro, IsRootDevice: false}); err != nil {
			return err
		}
	}
	if s.Tap != "" {
		if err := c.PutNetworkInterface(ctx, fcapi.NetworkInterface{IfaceID: ifaceID, HostDevName: s.Tap, GuestMac: s.MAC}); err != nil {
			return err
		}
	}
	if err := c.PutVsock(ctx, fcapi.Vsock{GuestCid: s.CID, UdsPath: p.vsock}); err != nil {
		return err
	}
	if err := c.PutEntropy(ctx, fcapi.EntropyDevice{}); err != nil {
		return err
	}
	return c.InstanceStart(ctx)
}

// Stop presses Ctrl-Alt-Del in the guest (which reboots, and with reboot=k
// ends Firecracker), waits up to timeout for the process to exit, then
// kills it. Idempotent.
func (d *Driver) Stop(ctx context.Context, h vmm.Handles, timeout time.Duration) error {
	err := vmm.StopProcess(ctx, h, timeout, func(ctx context.Context) error {
		return fcapi.New(h.APISocket).WithTimeout(5 * time.Second).SendCtrlAltDel(ctx)
	})
	if err != nil {
		return fmt.Errorf("stop firecracker pid %d: %w", h.PID, err)
	}
	return nil
}

// Cleanup removes what a VMM of h leaves beside it once it is gone: its
// jail, when it ran under the jailer (the jail holds hard links to the
// VM's disks, which would keep their blocks after a delete).
func (d *Driver) Cleanup(h vmm.Handles) error {
	if h.Jail == "" {
		return nil
	}
	if d.Jailer == nil {
		return fmt.Errorf("vm jailed in %s, but no jailer is configured: remove that directory by hand", h.Jail)
	}
	return d.Jailer.removeJail(h)
}

// Kill ends firecracker at once (SIGKILL) and waits for it to exit.
// Idempotent.
func (d *Driver) Kill(ctx context.Context, h vmm.Handles) error {
	if err := vmm.KillProcess(ctx, h); err != nil {
		return fmt.Errorf("kill firecracker: %w", err)
	}
	return nil
}

// Version is a Firecracker release number.
type Version struct{ Major, Minor, Patch int }

// String formats v as MAJOR.MINOR.PATCH.
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

var versionRE = regexp.MustCompile(`Firecracker v(\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads the version from `firecracker --version` output
// ("Firecracker v1.8.0").
func ParseVersion(out string) (Version, error) {
	sc := bufio.NewScanner(bytes.NewBufferString(out))
	for sc.Scan() {
		m := versionRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var v Version
		v.Major, _ = strconv.Atoi(m[1])
		v.Minor, _ = strconv.Atoi(m[2])
		v.Patch, _ = strconv.Atoi(m[3])
		return v, nil
	}
	return Version{}, fmt.Errorf("no firecracker version in %q", out)
}

// BinaryVersion runs `bin --version` and parses its output (the release
// Driver.Version reports; hostcap.FindFirecracker enforces the minimum).
func BinaryVersion(ctx context.Context, bin string) (Version, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w: %s", bin, err, out)
	}
	v, err := ParseVersion(string(out))
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	return v, nil
}
