package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/firecracker/fcapi"
)

// Names, inside a state directory, of the files Firecracker's full
// snapshot writes: the microVM state and the guest memory.
const (
	StateFile  = "vmstate"
	MemoryFile = "memory"
)

var (
	_ vmm.Snapshotter = (*Driver)(nil)
	_ vmm.Versioner   = (*Driver)(nil)
	_ vmm.Relocator   = (*Driver)(nil)
)

// overridesSince is the first Firecracker release whose snapshot load
// takes network_overrides (a new tap for a restored interface).
var overridesSince = Version{1, 12, 0}

// Relocatable reports whether a VM's saved state can be restored into
// another VM. Firecracker's state names the host paths of the VM's disks
// and vsock socket, and no release can override the disks' paths: only a
// jailed VM, whose paths are the same names inside every jail, can be
// restored elsewhere, and only by a Firecracker that can swap the tap
// (network_overrides, 1.12 and later).
func (d *Driver) Relocatable(ctx context.Context, h vmm.Handles) error {
	if h.PID != 0 && h.Jail == "" || h.PID == 0 && d.Jailer == nil {
		return errors.New("firecracker's saved state names the host paths of the vm's disks and socket, so it restores only into the vm that saved it; run firecracker under the jailer (jailer_bin in config), whose paths are the same in every jail, for warm templates, snapshots and forks")
	}
	v, err := d.Version(ctx)
	if err != nil {
		return err
	}
	if !d.canOverride(v) {
		return fmt.Errorf("firecracker %s cannot give a restored vm its own tap (network_overrides needs %s or later)", v, overridesSince)
	}
	return nil
}

// canOverride reports whether Firecracker release v (as Version returns
// it) takes network_overrides on snapshot load.
func (d *Driver) canOverride(v string) bool {
	var have Version
	if _, err := fmt.Sscanf(v, "%d.%d.%d", &have.Major, &have.Minor, &have.Patch); err != nil {
		return false
	}
	return have.Major > overridesSince.Major ||
		have.Major == overridesSince.Major && (have.Minor > overridesSince.Minor ||
			have.Minor == overridesSince.Minor && have.Patch >= overridesSince.Patch)
}

// Pause stops the guest's vCPUs (PATCH /vm Paused).
func (d *Driver) Pause(ctx context.Context, h vmm.Handles) error {
	return d.patchVM(ctx, h, fcapi.VMPaused)
}

// Resume lets a paused guest run again (PATCH /vm Resumed).
func (d *Driver) Resume(ctx context.Context, h vmm.Handles) error {
	return d.patchVM(ctx, h, fcapi.VMResumed)
}

func (d *Driver) patchVM(ctx context.Context, h vmm.Handles, state fcapi.VMState) error {
	if err := fcapi.New(h.APISocket).PatchVM(ctx, state); err != nil {
		return fmt.Errorf("firecracker pid %d: set vm %s: %w", h.PID, state, err)
	}
	return nil
}

// Save pauses the guest and writes a full snapshot (PUT /snapshot/create)
// into dir: StateFile and MemoryFile. The snapshot keeps the tap name and
// vsock socket path of the VM it was taken from, and restore sends no
// overrides (the oldest Firecracker banger supports does not know them),
// so its state loads only into the same VM (its own directory and tap),
// never into another.
func (d *Driver) Save(ctx context.Context, h vmm.Handles, dir string) (vmm.SavedState, error) {
	if err := d.Pause(ctx, h); err != nil {
		return vmm.SavedState{}, err
	}
	c := fcapi.New(h.APISocket)
	ver, err := c.Version(ctx)
	if err != nil {
		return vmm.SavedState{}, fmt.Errorf("firecracker pid %d: version: %w", h.PID, err)
	}
	state, mem := filepath.Join(dir, StateFile), filepath.Join(dir, MemoryFile)
	// A jailed Firecracker writes inside its jail; the files are moved out
	// (the jail is on the state dir's filesystem).
	fcState, fcMem, jailDir, err := d.snapshotTarget(h, state, mem)
	if err != nil {
		return vmm.SavedState{}, fmt.Errorf("firecracker pid %d: snapshot: %w", h.PID, err)
	}
	// Writing guest memory takes as long as the disk needs: the call gets
	// the caller's deadline, not the per-call default.
	err = c.WithTimeout(snapshotTimeout).CreateSnapshot(ctx, fcapi.SnapshotCreateParams{
		SnapshotPath: fcState,
		MemFilePath:  fcMem,
		SnapshotType: fcapi.SnapshotFull,
	})
	if err == nil && jailDir != "" {
		err = errors.Join(os.Rename(filepath.Join(jailDir, StateFile), state), os.Rename(filepath.Join(jailDir, MemoryFile), mem))
		if err == nil {
			err = d.Jailer.sealState(state, mem)
		}
	}
	var files []vmm.StateFile
	if err == nil {
		files, err = vmm.DescribeState(dir, StateFile, MemoryFile)
	}
	if err != nil {
		_ = os.Remove(state)
		_ = os.Remove(mem)
		return vmm.SavedState{}, fmt.Errorf("firecracker pid %d: snapshot: %w", h.PID, err)
	}
	return vmm.SavedState{VMM: vmm.Firecracker, Version: ver.FirecrackerVersion, Files: files}, nil
}

// snapshotTarget returns the paths Firecracker writes a snapshot to: state
// and mem themselves, or, for a jailed VMM, files in a fresh directory of
// its jail (returned as jailDir, host path) owned by the jail's user.
func (d *Driver) snapshotTarget(h vmm.Handles, state, mem string) (fcState, fcMem, jailDir string, err error) {
	if h.Jail == "" {
		return state, mem, "", nil
	}
	if d.Jailer == nil {
		return "", "", "", fmt.Errorf("vm jailed in %s, but no jailer is configured", h.Jail)
	}
	jailDir = filepath.Join(h.Jail, jailSnapshotDir)
	// A restore left links to the loaded state here: writing through them
	// would overwrite that state.
	if err := os.RemoveAll(jailDir); err != nil {
		return "", "", "", err
	}
	if err := os.Mkdir(jailDir, 0o700); err != nil {
		return "", "", "", err
	}
	if err := os.Chown(jailDir, d.Jailer.UID, d.Jailer.GID); err != nil {
		return "", "", "", err
	}
	return "/" + jailSnapshotDir + "/" + StateFile, "/" + jailSnapshotDir + "/" + MemoryFile, jailDir, nil
}

// snapshotTimeout bounds one snapshot create or load call; the caller's
// context may end it sooner.
const snapshotTimeout = 10 * time.Minute

// Version is the release of the firecracker binary Start would run
// ("1.8.0"), the form Save records from GET /version.
func (d *Driver) Version(ctx context.Context) (string, error) {
	bin, err := d.binary()
	if err != nil {
		return "", err
	}
	return d.versions.Get(bin, func() (string, error) {
		v, err := BinaryVersion(ctx, bin)
		if err != nil {
			return "", err
		}
		return v.String(), nil
	})
}

// checkSnapshot reports a missing state or memory file in dir before a
// process is started for it.
func checkSnapshot(dir string) error {
	for _, p := range []string{filepath.Join(dir, StateFile), filepath.Join(dir, MemoryFile)} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("saved state: %w", err)
		}
	}
	return nil
}

// restore makes a fresh process load the snapshot in s.RestoreDir and
// resume instead of booting: only the logger and metrics are configured
// before the load (as Firecracker requires), and no device is added after
// it (the vsock device comes back from the snapshot, bound at its saved
// path, which under the jailer is the same in every jail). Where the
// release allows, the interface is given s.Tap, so state saved by another
// (jailed) VM restores onto this VM's tap.
func (d *Driver) restore(ctx context.Context, c *fcapi.Client, p paths, s vmm.Spec) error {
	if err := d.logging(ctx, c, p); err != nil {
		return err
	}
	load := fcapi.SnapshotLoadParams{
		SnapshotPath: filepath.Join(s.RestoreDir, StateFile),
		MemBackend:   &fcapi.MemoryBackend{BackendType: fcapi.BackendFile, BackendPath: filepath.Join(s.RestoreDir, MemoryFile)},
		ResumeVM:     true,
	}
	if s.Tap != "" {
		if v, err := d.Version(ctx); err == nil && d.canOverride(v) {
			load.NetworkOverrides = []fcapi.NetworkOverride{{IfaceID: ifaceID, HostDevName: s.Tap}}
		}
	}
	if err := c.WithTimeout(snapshotTimeout).LoadSnapshot(ctx, load); err != nil {
		return fmt.Errorf("load snapshot %s: %w", s.RestoreDir, err)
	}
	return nil
}
