package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/units"
	"banger/internal/vmname"
	"banger/internal/workspace"
)

// vmFlags are the flags shared by `vm create` and `vm run`. Their
// defaults come from config.ResolveVMDefaults, so --help shows what a VM
// would get on this host with this config.
type vmFlags struct {
	name, image, vmm, diskSize string
	vcpu, memoryMiB            int
	cold                       bool
	from                       string
	net                        string
	allow                      []string
	secrets                    []string
	flags                      *pflag.FlagSet
}

func (a *app) addVMFlags(cmd *cobra.Command, f *vmFlags) {
	d := config.ResolveVMDefaults(a.cfg, a.host)
	image, vmm := config.DefaultImageName, config.DefaultVMM
	if a.cfg != nil {
		image, vmm = a.cfg.DefaultImage, a.cfg.VMM
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "VM name (DNS label; generated when empty)")
	fl.StringVar(&f.image, "image", image, "image to boot")
	fl.IntVar(&f.vcpu, "vcpu", d.VCPU, fmt.Sprintf("virtual CPUs (%s)", d.VCPUSource))
	fl.IntVar(&f.memoryMiB, "memory", d.MemoryMiB, fmt.Sprintf("memory in MiB (%s)", d.MemorySource))
	fl.StringVar(&f.diskSize, "disk-size", units.FormatSize(d.DiskBytes), fmt.Sprintf("size of the /root work disk, e.g. 16G (%s)", d.DiskSource))
	fl.StringVar(&f.vmm, "vmm", vmm, "VMM: auto, firecracker or qemu")
	fl.BoolVar(&f.cold, "cold", false, "boot the kernel even when a warm template of the image fits (see banger image warm)")
	fl.StringVar(&f.from, "from", "", "make the VM from a snapshot, VM@SNAPSHOT: its memory, disks and sessions, with the new VM's identity (see banger vm snapshot)")
	fl.StringVar(&f.net, "net", "", "egress: open (the internet less private ranges and the host), allow (only --allow rules) or none (default: the config's; with --from, the snapshot's)")
	fl.StringArrayVar(&f.allow, "allow", nil, "let the VM reach HOST, *.DOMAIN, IPV4 or CIDR (each with an optional :PORT or :LOW-HIGH), or @PRESET; repeatable; implies --net allow")
	fl.StringArrayVar(&f.secrets, "secret", nil, "give the VM the [[secret]] NAME: its guest holds a placeholder, banger's proxy sends the value to the secret's hosts; repeatable (default: the secrets marked default; with --from, the snapshot's)")
	f.flags = fl
}

// specFlags name the fields of a VM spec as `vm create` and `vm run`
// spell them, for the errors of api.VMSpec.Validate.
var specFlags = map[api.SpecField]string{api.SpecVCPU: "--vcpu", api.SpecMemory: "--memory", api.SpecDisk: "--disk-size"}

// request validates the flags and builds the create request.
func (f *vmFlags) request() (api.CreateVMRequest, config.ResolvedDefaults, error) {
	var r config.ResolvedDefaults
	if f.name != "" {
		if err := vmname.Validate(f.name); err != nil {
			return api.CreateVMRequest{}, r, err
		}
	}
	netMode, allow, err := netRequest(f.net, f.allow)
	if err != nil {
		return api.CreateVMRequest{}, r, err
	}
	if f.from != "" {
		if vm, snap, ok := strings.Cut(f.from, "@"); !ok || vm == "" || snap == "" {
			return api.CreateVMRequest{}, r, fmt.Errorf("--from %q: want VM@SNAPSHOT, as in web@before-upgrade", f.from)
		}
		for _, n := range []string{"image", "vcpu", "memory", "disk-size", "cold"} {
			if f.flags != nil && f.flags.Changed(n) {
				return api.CreateVMRequest{}, r, fmt.Errorf("--from with --%s: a VM made from a snapshot has the snapshot's image and shape", n)
			}
		}
		return api.CreateVMRequest{Name: f.name, VMM: f.vmm, From: f.from, Net: netMode, Allow: allow, Secrets: f.secrets}, r, nil
	}
	disk, err := units.ParseSize(f.diskSize)
	if err != nil {
		return api.CreateVMRequest{}, r, fmt.Errorf("--disk-size: %w", err)
	}
	spec := api.VMSpec{VCPU: f.vcpu, MemoryMiB: f.memoryMiB, DiskBytes: disk}
	if err := spec.Validate(); err != nil {
		return api.CreateVMRequest{}, r, api.NameSpecField(err, specFlags)
	}
	switch f.vmm {
	case "auto", "firecracker", "qemu":
	default:
		return api.CreateVMRequest{}, r, fmt.Errorf("--vmm %q: want auto, firecracker or qemu", f.vmm)
	}
	r = config.ResolvedDefaults{VCPU: f.vcpu, MemoryMiB: f.memoryMiB, DiskBytes: disk}
	req := api.CreateVMRequest{
		Name:    f.name,
		Image:   f.image,
		VMM:     f.vmm,
		Spec:    spec,
		Cold:    f.cold,
		Net:     netMode,
		Allow:   allow,
		Secrets: f.secrets,
	}
	return req, r, nil
}

func newVMCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Create, run and manage VMs",
		Args:  noArgs,
	}
	cmd.AddCommand(newVMCreateCmd(a), newVMRunCmd(a))
	cmd.AddCommand(lifecycleCmds(a)...)
	cmd.AddCommand(guestCmds(a)...)
	cmd.AddCommand(newSessionCmd(a), newWorkspaceCmd(a), newVMNetCmd(a))
	return cmd
}

func newVMCreateCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create and boot a VM",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := a.createVM(cmd.Context(), &f, false)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, vm)
			}
			fmt.Fprintln(a.streams.Out, vm.Name)
			a.printNextSteps(vm)
			return nil
		},
	}
	a.addVMFlags(cmd, &f)
	return cmd
}

func newVMRunCmd(a *app) *cobra.Command {
	var f vmFlags
	var rm, tty bool
	var ws string
	cmd := &cobra.Command{
		Use:   "run [flags] [-- CMD [ARG...]]",
		Short: "Create a VM, boot it and run a command in it",
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); len(args) > 0 && dash != 0 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("put the command after --, as in: banger vm run -- %s", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if ws != "" {
				if _, err := workspace.Toplevel(cmd.Context(), ws); err != nil {
					return err
				}
			}
			// A command runs through the agent: sshd need not be up yet.
			vm, err := a.createVM(cmd.Context(), &f, len(args) > 0)
			if err != nil {
				return err
			}
			return a.runInVM(cmd.Context(), vm, args, rm, tty, ws)
		},
	}
	a.addVMFlags(cmd, &f)
	cmd.Flags().StringVar(&ws, "workspace", "", "copy the git repository containing DIR (--workspace=DIR; alone: the current one) to /root/repo before CMD")
	cmd.Flags().Lookup("workspace").NoOptDefVal = "."
	cmd.Flags().BoolVar(&rm, "rm", false, "delete the VM when the command exits")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal for CMD")
	return cmd
}

// createVM prints the spec line, starts the create operation and follows
// it to the created VM. noSSHWait finishes once the agent answers (see
// api.CreateVMRequest.NoSSHWait).
func (a *app) createVM(ctx context.Context, f *vmFlags, noSSHWait bool) (api.VM, error) {
	if _, err := a.config(); err != nil {
		return api.VM{}, err
	}
	req, spec, err := f.request()
	if err != nil {
		return api.VM{}, err
	}
	req.NoSSHWait = noSSHWait
	if req.From != "" {
		fmt.Fprintf(a.streams.ErrOut, "from snapshot %s\n", req.From)
	} else {
		fmt.Fprintln(a.streams.ErrOut, spec.SpecLine())
	}
	c, err := a.client(ctx)
	if err != nil {
		return api.VM{}, err
	}
	ref, err := c.CreateVM(ctx, req)
	if err != nil {
		return api.VM{}, err
	}
	return followResult[api.VM](ctx, a, c, ref, "created vm")
}

// runInVM runs argv in vm with the caller's stdio and exits with its
// status; rm deletes the VM afterwards. Without argv it prints the
// next-step commands and attaches nothing. A non-empty ws is a directory
// of the git repository to prepare as the VM's workspace first.
func (a *app) runInVM(ctx context.Context, vm api.VM, argv []string, rm, tty bool, ws string) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	code := 0
	if ws != "" {
		_, err = a.prepareWorkspace(ctx, c, vm.Name, workspaceOpts{path: ws})
	}
	switch {
	case err != nil:
		// A failed workspace leaves the VM for inspection unless --rm.
	case len(argv) > 0:
		code, err = a.exec(ctx, c, vm.Name, api.ExecRequest{Argv: argv, TTY: tty})
	case !rm:
		a.printNextSteps(vm)
	}
	if rm {
		if derr := c.DeleteVM(context.WithoutCancel(ctx), vm.ID, true); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete vm %s: %w", vm.Name, derr))
		}
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// printNextSteps tells the user what to do with a new VM.
func (a *app) printNextSteps(vm api.VM) {
	fmt.Fprintf(a.streams.ErrOut, "vm %s is running at %s (%s)\n", vm.Name, vm.IP, vm.DNSName)
	fmt.Fprintf(a.streams.ErrOut, "  banger vm ssh %s\n  banger vm exec %s -- CMD\n  banger vm delete %s\n", vm.Name, vm.Name, vm.Name)
	if vm.Net.Mode == api.NetAllow || vm.Net.Mode == api.NetNone {
		fmt.Fprintf(a.streams.ErrOut, "egress %s: banger vm net %s changes it, banger vm net log %s shows what the VM tried\n", formatPolicy(vm.Net), vm.Name, vm.Name)
	}
}
