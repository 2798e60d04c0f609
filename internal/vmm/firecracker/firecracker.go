// Package firecracker drives Firecracker as a banger VMM through
// firecracker-go-sdk. Every SDK and Firecracker API call stays inside this
// package, so it can become a thin client of the current API later without
// touching the rest of banger.
//
// The SDK (v1.0.0) is used with these guards: its kernel-args handler is
// removed and boot_args are exactly banger's command line (the SDK passes
// them through a Go map, reordering them and dropping duplicates); seccomp
// is configured explicitly (the zero value means --no-seccomp); the context
// given to NewMachine and Start is never cancelled (cancelling it kills the
// VM); no signals are forwarded to the VMM (the daemon's SIGTERM must not
// stop VMs); the API client disables keep-alive so no socket connection is
// left open (SDK issue #368); and Stop waits for the process to exit
// (SDK issue #428).
package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	fcclient "github.com/firecracker-microvm/firecracker-go-sdk/client"
	models "github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	ops "github.com/firecracker-microvm/firecracker-go-sdk/client/operations"
	httptransport "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"
	"github.com/sirupsen/logrus"

	"banger/internal/layout"
	"banger/internal/vmm"
)

// DefaultBinary is looked up on PATH when Driver.Binary is empty.
const DefaultBinary = "firecracker"

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
}

var _ vmm.Driver = (*Driver)(nil)

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

// Config returns the SDK configuration for s: banger's boot_args verbatim,
// drives in spec order with no root device (the guest mounts root by
// label), the tap, one vsock device, machine, logger and metrics.
func (d *Driver) Config(s vmm.Spec) sdk.Config {
	p := pathsOf(s)
	level := d.LogLevel
	if level == "" {
		level = "Info"
	}
	cfg := sdk.Config{
		SocketPath:      p.api,
		LogPath:         p.log,
		LogLevel:        level,
		MetricsPath:     p.metrics,
		KernelImagePath: s.Vmlinux,
		InitrdPath:      s.Initrd,
		KernelArgs:      s.Cmdline,
		MachineCfg: models.MachineConfiguration{
			VcpuCount:  sdk.Int64(int64(s.VCPU)),
			MemSizeMib: sdk.Int64(int64(s.MemoryMiB)),
			Smt:        sdk.Bool(false),
		},
		VsockDevices:   []sdk.VsockDevice{{ID: "vsock0", Path: p.vsock, CID: s.CID}},
		VMID:           s.VMID,
		ForwardSignals: []os.Signal{}, // non-nil: forward nothing
		Seccomp:        sdk.SeccompConfig{Enabled: true, Filter: d.SeccompFilter},
	}
	for _, dr := range s.Drives {
		cfg.Drives = append(cfg.Drives, models.Drive{
			DriveID:      sdk.String(dr.ID),
			PathOnHost:   sdk.String(dr.Path),
			IsReadOnly:   sdk.Bool(dr.ReadOnly),
			IsRootDevice: sdk.Bool(false),
		})
	}
	if s.Tap != "" {
		cfg.NetworkInterfaces = sdk.NetworkInterfaces{{
			StaticConfiguration: &sdk.StaticNetworkConfiguration{HostDevName: s.Tap, MacAddress: s.MAC},
		}}
	}
	return cfg
}

// newClient returns an SDK client for the API socket whose HTTP transport
// opens one connection per request and closes it afterwards.
func newClient(socket string, logger *logrus.Entry) *sdk.Client {
	tr := httptransport.New(fcclient.DefaultHost, fcclient.DefaultBasePath, fcclient.DefaultSchemes)
	tr.Transport = &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	tr.SetLogger(logger)
	return sdk.NewClient(socket, logger, false, sdk.WithOpsClient(ops.New(tr, strfmt.Default)))
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// Start boots s as a detached firecracker process (own session; stdout,
// which carries the guest serial console, and stderr to console.log;
// Firecracker's log to vmm.log) and returns after InstanceStart succeeded.
// On error the process is killed and waited for.
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
	p := pathsOf(s)
	for _, sock := range []string{p.api, p.vsock} {
		if err := vmm.CheckSocketPath(sock); err != nil {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
		}
		// PUT /vsock binds uds_path immediately and the SDK refuses an
		// existing API socket: remove what a previous run left.
		if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: remove stale %s: %w", s.VMID, sock, err)
		}
	}

	cmd := exec.Command(bin, d.Args(s)...)
	cmd.Dir = s.Dir
	logf, err := vmm.Detach(cmd, p.console)
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
	}
	defer logf.Close()

	logger := quietLogger()
	// The machine's context must outlive Start: the SDK kills the VMM when
	// it is cancelled. The VM's life is bounded by Stop/Kill instead.
	life := context.WithoutCancel(ctx)
	opts := []sdk.Opt{
		sdk.WithProcessRunner(cmd),
		sdk.WithLogger(logger),
		sdk.WithClient(newClient(p.api, logger)),
	}
	if s.RestoreDir != "" {
		restore, err := snapshotOpt(s.RestoreDir)
		if err != nil {
			return vmm.Handles{}, fmt.Errorf("restore firecracker vm %s: %w", s.VMID, err)
		}
		opts = append(opts, restore)
	}
	m, err := sdk.NewMachine(life, d.Config(s), opts...)
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s: %w", s.VMID, err)
	}
	m.Handlers.FcInit = m.Handlers.FcInit.Remove(sdk.SetupKernelArgsHandlerName).Remove(sdk.SetupNetworkHandlerName)

	h := vmm.Handles{
		VMM:            vmm.Firecracker,
		APISocket:      p.api,
		VsockSocket:    p.vsock,
		ConsoleLog:     p.console,
		VMMLog:         p.log,
		Tap:            s.Tap,
		AgentTransport: vmm.TransportVsock,
	}
	fail := func(err error) (vmm.Handles, error) {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = m.Wait(wctx)
			cancel()
		}
		return vmm.Handles{}, fmt.Errorf("start firecracker vm %s (see %s and %s): %w", s.VMID, p.console, p.log, err)
	}
	if err := m.Start(life); err != nil {
		return fail(err)
	}
	h.PID = cmd.Process.Pid
	if h.StartTime, err = vmm.ProcStartTime(h.PID); err != nil {
		return fail(err)
	}
	return h, nil
}

// Stop presses Ctrl-Alt-Del in the guest (which reboots, and with reboot=k
// ends Firecracker), waits up to timeout for the process to exit, then
// kills it. Idempotent.
func (d *Driver) Stop(ctx context.Context, h vmm.Handles, timeout time.Duration) error {
	err := vmm.StopProcess(ctx, h, timeout, func(ctx context.Context) error {
		c := newClient(h.APISocket, quietLogger())
		action := models.InstanceActionInfoActionTypeSendCtrlAltDel
		_, err := c.CreateSyncAction(ctx, &models.InstanceActionInfo{ActionType: &action})
		return err
	})
	if err != nil {
		return fmt.Errorf("stop firecracker pid %d: %w", h.PID, err)
	}
	return nil
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
