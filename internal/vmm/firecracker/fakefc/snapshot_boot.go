package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/qemu"
)

// snapshotTimeout bounds a boot-mode snapshot create or load; the
// request's context may end it sooner.
const snapshotTimeout = 10 * time.Minute

// quiesceTimeout bounds the wait for the guest to close its end of the
// agent port before its memory is saved, as banger's daemon bounds it.
const quiesceTimeout = 5 * time.Second

// bootSnapshot is the boot-mode part of a snapshot file: what a fresh
// stand-in needs to start QEMU with the device set the guest was saved
// with, and the size and checksum of the migration stream in the memory
// file.
type bootSnapshot struct {
	QEMUVersion string       `json:"qemu_version"`
	Kernel      string       `json:"kernel_image_path"`
	Initrd      string       `json:"initrd_path,omitempty"`
	BootArgs    string       `json:"boot_args"`
	Drives      []savedDrive `json:"drives"`
	Iface       *savedIface  `json:"network_interface,omitempty"`
	VsockCID    uint32       `json:"vsock_guest_cid,omitempty"`
	SerialOut   string       `json:"serial_out_path,omitempty"`
	MemBytes    int64        `json:"mem_file_bytes"`
	MemSHA256   string       `json:"mem_file_sha256"`
}

// savedDrive is one drive of a boot-mode snapshot, in configuration order.
type savedDrive struct {
	ID       string `json:"drive_id"`
	Path     string `json:"path_on_host"`
	ReadOnly bool   `json:"is_read_only"`
	Root     bool   `json:"is_root_device"`
}

// savedIface is the network interface of a boot-mode snapshot.
type savedIface struct {
	ID          string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// handles describes g to the QEMU driver, whose Pause, Resume, Save and
// QuiesceAgent the stand-in reuses so that it saves a guest as banger's
// QEMU VMs are saved.
func (g *guest) handles() vmm.Handles {
	return vmm.Handles{
		VMM:            vmm.QEMU,
		PID:            g.cmd.Process.Pid,
		QMPSocket:      g.qmp,
		SerialSocket:   g.agent,
		AgentTransport: vmm.TransportSerial,
		Accel:          vmm.AccelTCG,
	}
}

// createBootSnapshot saves the paused guest for a fresh stand-in to
// resume: the QEMU migration stream (RAM and device state) as
// mem_file_path, the configuration as snapshot_path, both 0600. The agent
// channel is quiesced first, with the guest running for the moment it
// needs to close its end, so the saved guest holds no session with this
// stand-in. The guest is paused again whatever the outcome; on failure
// the files written are removed. Called with f.mu held.
func (f *fake) createBootSnapshot(ctx context.Context, m map[string]any) error {
	snap, _ := m["snapshot_path"].(string)
	mem, _ := m["mem_file_path"].(string)
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	g := f.guest
	d := &qemu.Driver{Binary: f.qemuBin}
	h := g.handles()
	written, err := f.saveBoot(ctx, d, h, snap, mem)
	if err == nil {
		return nil
	}
	for _, p := range written {
		_ = os.Remove(p)
	}
	// Save stops the guest first, but a failure before it (or a quiesce
	// that resumed it) must not leave it running.
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), qmpTimeout)
	defer pcancel()
	if perr := d.Pause(pctx, h); perr != nil {
		err = errors.Join(err, perr)
	}
	return bad("cannot create the snapshot: %v", err)
}

// saveBoot does the work of createBootSnapshot and returns the paths it
// wrote, for the caller to remove on failure.
func (f *fake) saveBoot(ctx context.Context, d *qemu.Driver, h vmm.Handles, snap, mem string) ([]string, error) {
	// The guest must run to notice the hang-up and close its port.
	if err := d.Resume(ctx, h); err != nil {
		return nil, err
	}
	if err := d.QuiesceAgent(ctx, h, f.hangUp, quiesceTimeout); err != nil {
		// As banger's daemon: a guest that does not close in time costs
		// only the wait, and says so in the VMM's log.
		fmt.Fprintln(os.Stderr, "fakefc: snapshot: agent channel not quiesced:", err)
	}
	// Save writes its fixed file name into a directory: a private one
	// beside mem_file_path, renamed into place once complete.
	tmp, err := os.MkdirTemp(filepath.Dir(mem), ".fakefc-save-")
	if err != nil {
		return nil, fmt.Errorf("memory file %s: %w", mem, err)
	}
	defer os.RemoveAll(tmp)
	saved, err := d.Save(ctx, h, tmp)
	if err != nil {
		return nil, fmt.Errorf("memory file %s: %w", mem, err)
	}
	if len(saved.Files) != 1 {
		return nil, fmt.Errorf("memory file %s: qemu saved %d files, want 1", mem, len(saved.Files))
	}
	if err := os.Rename(filepath.Join(tmp, saved.Files[0].Name), mem); err != nil {
		return nil, fmt.Errorf("memory file %s: %w", mem, err)
	}
	written := []string{mem}
	sf := snapshotFile{
		Marker: Version, Machine: f.machine, Drives: f.drives, VsockPath: f.vsockPath,
		Boot: &bootSnapshot{
			QEMUVersion: saved.Version,
			Kernel:      f.kernel, Initrd: f.initrd, BootArgs: f.bootArgs,
			VsockCID:  uint32(f.cid),
			SerialOut: f.serialOut,
			MemBytes:  saved.Files[0].Size, MemSHA256: saved.Files[0].SHA256,
		},
	}
	for _, dr := range f.driveOrder {
		sf.Boot.Drives = append(sf.Boot.Drives, savedDrive{ID: dr.id, Path: dr.path, ReadOnly: dr.readOnly, Root: dr.root})
	}
	if f.tap != "" {
		sf.Boot.Iface = &savedIface{ID: f.ifaceID, HostDevName: f.tap, GuestMAC: f.mac}
	}
	b, err := json.Marshal(sf)
	if err != nil {
		return written, err
	}
	written = append(written, snap)
	if err := writePrivate(snap, b); err != nil {
		return written, fmt.Errorf("snapshot file %s: %w", snap, err)
	}
	return written, nil
}

// writePrivate writes b to path as a file of mode 0600, also when path
// existed with another mode.
func writePrivate(path string, b []byte) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = fh.Write(b)
	err = errors.Join(err, fh.Chmod(0o600), fh.Sync())
	return errors.Join(err, fh.Close())
}

// loadBootSnapshot resumes a guest saved by createBootSnapshot in this
// fresh stand-in: it checks the snapshot file and the memory file,
// applies network_overrides and vsock_override, starts QEMU with the
// saved machine's command line loading the memory file (-incoming fd:3
// -S), waits until the load completes, binds the vsock socket and
// bridges it as after InstanceStart, and lets the guest run when
// resume_vm says so. Any failure leaves the stand-in unconfigured with no
// QEMU running. Called with f.mu held.
func (f *fake) loadBootSnapshot(ctx context.Context, m map[string]any) (err error) {
	snap, mem, sf, err := openSnapshot(m)
	if err != nil {
		return err
	}
	if sf.Boot == nil {
		return bad("snapshot file %s is not a boot-mode snapshot of this stand-in: it holds no guest memory or device state", snap)
	}
	bs := *sf.Boot
	if err := vmm.VerifyState(filepath.Dir(mem), vmm.SavedState{Files: []vmm.StateFile{
		{Name: filepath.Base(mem), Size: bs.MemBytes, SHA256: bs.MemSHA256},
	}}); err != nil {
		return bad("cannot load the memory file %s: %v", mem, err)
	}
	vsockPath, err := applyOverrides(&bs, sf.VsockPath, m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	ver, err := qemuVersion(ctx, f.qemuBin)
	if err != nil {
		return bad("cannot load the snapshot: %v", err)
	}
	if ver != bs.QEMUVersion {
		return bad("snapshot file %s was saved by QEMU %s, this stand-in runs QEMU %s: microvm state loads only into the same build", snap, bs.QEMUVersion, ver)
	}
	for what, p := range map[string]string{"kernel_image_path": bs.Kernel, "initrd_path": bs.Initrd} {
		if p != "" {
			if err := mustExist(what, p); err != nil {
				return err
			}
		}
	}
	for _, d := range bs.Drives {
		if err := mustExist("path_on_host of drive "+d.ID, d.Path); err != nil {
			return err
		}
	}

	serialOut := f.serialOut
	f.useSnapshot(sf, bs)
	defer func() {
		if err != nil {
			f.forgetSnapshot(serialOut)
		}
	}()
	var ln net.Listener
	if vsockPath != "" {
		if ln, err = net.Listen("unix", vsockPath); err != nil {
			return bad("cannot bind the vsock uds_path %s: %v", vsockPath, err)
		}
		defer func() {
			if err != nil {
				ln.Close()
			}
		}()
	}
	mf, err := os.Open(mem)
	if err != nil {
		return bad("cannot open the memory file %s: %v", mem, err)
	}
	g, err := f.launch(mf)
	mf.Close() // QEMU holds its own copy
	if err != nil {
		return err
	}
	if err = g.waitLoaded(ctx); err != nil {
		g.stop()
		return bad("cannot load the memory file %s: %v (QEMU's output is on the stand-in's stderr)", mem, err)
	}
	resume, _ := m["resume_vm"].(bool)
	if resume {
		if err = g.qmpDo(ctx, "cont", nil); err != nil {
			g.stop()
			return bad("cannot resume the loaded guest: %v", err)
		}
	}
	f.adopt(g)
	if ln != nil {
		f.vsockPath, f.vsockLn = vsockPath, ln
		go f.vsockBridge(ln)
	}
	f.bootSrc, f.booted, f.paused = true, true, !resume
	return nil
}

// applyOverrides applies a load's network_overrides to bs (each must name
// the snapshot's interface) and returns the vsock socket path: the saved
// one, or vsock_override's. These are what let a VM's saved state resume
// on another VM's tap and socket.
func applyOverrides(bs *bootSnapshot, vsockPath string, m map[string]any) (string, error) {
	if list, ok := m["network_overrides"].([]any); ok {
		if len(list) > 0 && bs.Iface != nil {
			iface := *bs.Iface
			bs.Iface = &iface
		}
		for _, o := range list {
			o, _ := o.(map[string]any)
			id, _ := o["iface_id"].(string)
			dev, _ := o["host_dev_name"].(string)
			if bs.Iface == nil || bs.Iface.ID != id {
				return "", bad("network override for interface %q: the snapshot has no such interface", id)
			}
			bs.Iface.HostDevName = dev
		}
	}
	if o, ok := m["vsock_override"].(map[string]any); ok {
		if vsockPath == "" {
			return "", bad("vsock override given, but the snapshot has no vsock device")
		}
		vsockPath, _ = o["uds_path"].(string)
	}
	return vsockPath, nil
}

// useSnapshot takes the snapshot's machine as the stand-in's
// configuration, as if it had been configured over the API; a
// serial_out_path configured before the load wins over the saved one.
// Called with f.mu held.
func (f *fake) useSnapshot(sf snapshotFile, bs bootSnapshot) {
	f.machine = sf.Machine
	f.kernel, f.initrd, f.bootArgs = bs.Kernel, bs.Initrd, bs.BootArgs
	f.drives, f.driveOrder = map[string]bool{}, nil
	for _, d := range bs.Drives {
		f.drives[d.ID] = d.Root
		f.putDrive(driveCfg{id: d.ID, path: d.Path, readOnly: d.ReadOnly, root: d.Root})
	}
	if bs.Iface != nil {
		f.tap, f.mac, f.ifaceID, f.tapCount = bs.Iface.HostDevName, bs.Iface.GuestMAC, bs.Iface.ID, 1
	}
	f.cid = float64(bs.VsockCID)
	if f.serialOut == "" {
		f.serialOut = bs.SerialOut
	}
}

// forgetSnapshot undoes useSnapshot after a failed load, so the stand-in
// is as fresh as before it. Called with f.mu held.
func (f *fake) forgetSnapshot(serialOut string) {
	f.machine = nil
	f.kernel, f.initrd, f.bootArgs = "", "", ""
	f.drives, f.driveOrder = map[string]bool{}, nil
	f.tap, f.mac, f.ifaceID, f.tapCount = "", "", "", 0
	f.cid = 0
	f.serialOut = serialOut
}

// waitLoaded polls QMP until QEMU has loaded its incoming migration
// stream: the run state leaves "inmigrate" for "paused" (QEMU was started
// with -S) and query-migrate does not report a failure. It fails when
// QEMU exits (as it does on a stream it cannot load) or ctx ends.
func (g *guest) waitLoaded(ctx context.Context) error {
	return g.pollStatus(ctx, "load not complete", func(status string) (bool, error) {
		switch status {
		case "inmigrate":
			return false, nil
		case "paused":
		default:
			return false, fmt.Errorf("qemu status %q while loading, want paused", status)
		}
		var mig struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := g.qmpDo(ctx, "query-migrate", &mig); err != nil {
			return false, err
		}
		if mig.Status == "failed" {
			return false, fmt.Errorf("incoming migration failed: %s", mig.ErrorDesc)
		}
		return true, nil
	})
}

// qemuVersion runs `bin --version` as qemu.Driver.Version does, but with
// every standard stream given: left nil, exec opens /dev/null, which a
// jail does not have.
func qemuVersion(ctx context.Context, bin string) (string, error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", bin, err, bytes.TrimSpace(errOut.Bytes()))
	}
	return qemu.ParseVersion(out.String())
}
