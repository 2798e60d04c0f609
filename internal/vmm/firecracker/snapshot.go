package firecracker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	models "github.com/firecracker-microvm/firecracker-go-sdk/client/models"

	"banger/internal/vmm"
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
)

// Pause stops the guest's vCPUs (PATCH /vm Paused).
func (d *Driver) Pause(ctx context.Context, h vmm.Handles) error {
	return d.patchVM(ctx, h, models.VMStatePaused)
}

// Resume lets a paused guest run again (PATCH /vm Resumed).
func (d *Driver) Resume(ctx context.Context, h vmm.Handles) error {
	return d.patchVM(ctx, h, models.VMStateResumed)
}

func (d *Driver) patchVM(ctx context.Context, h vmm.Handles, state string) error {
	c := newClient(h.APISocket, quietLogger())
	if _, err := c.PatchVM(ctx, &models.VM{State: sdk.String(state)}); err != nil {
		return fmt.Errorf("firecracker pid %d: set vm %s: %w", h.PID, state, err)
	}
	return nil
}

// Save pauses the guest and writes a full snapshot (PUT /snapshot/create)
// into dir: StateFile and MemoryFile. Firecracker restores a snapshot's
// tap name and vsock socket path as they were saved, so its state loads
// only into the same VM (its own directory and tap), never into another.
func (d *Driver) Save(ctx context.Context, h vmm.Handles, dir string) (vmm.SavedState, error) {
	if err := d.Pause(ctx, h); err != nil {
		return vmm.SavedState{}, err
	}
	c := newClient(h.APISocket, quietLogger())
	ver, err := c.GetFirecrackerVersion(ctx)
	if err != nil {
		return vmm.SavedState{}, fmt.Errorf("firecracker pid %d: version: %w", h.PID, err)
	}
	state, mem := filepath.Join(dir, StateFile), filepath.Join(dir, MemoryFile)
	_, err = c.CreateSnapshot(ctx, &models.SnapshotCreateParams{
		SnapshotPath: sdk.String(state),
		MemFilePath:  sdk.String(mem),
		SnapshotType: models.SnapshotCreateParamsSnapshotTypeFull,
	})
	var files []vmm.StateFile
	if err == nil {
		files, err = vmm.DescribeState(dir, StateFile, MemoryFile)
	}
	if err != nil {
		_ = os.Remove(state)
		_ = os.Remove(mem)
		return vmm.SavedState{}, fmt.Errorf("firecracker pid %d: snapshot: %w", h.PID, err)
	}
	return vmm.SavedState{VMM: vmm.Firecracker, Version: sdk.StringValue(ver.Payload.FirecrackerVersion), Files: files}, nil
}

// Version is the release of the firecracker binary Start would run
// ("1.8.0"), the form Save records from GET /version.
func (d *Driver) Version(ctx context.Context) (string, error) {
	bin, err := d.binary()
	if err != nil {
		return "", err
	}
	v, err := BinaryVersion(ctx, bin)
	if err != nil {
		return "", err
	}
	return v.String(), nil
}

// snapshotOpt makes a Machine load dir's snapshot and resume instead of
// booting. The SDK's load sequence adds the vsock device after the load,
// which Firecracker refuses (the device comes back from the snapshot, at
// its saved path), so that handler goes too.
func snapshotOpt(dir string) (sdk.Opt, error) {
	state, mem := filepath.Join(dir, StateFile), filepath.Join(dir, MemoryFile)
	for _, p := range []string{state, mem} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("saved state: %w", err)
		}
	}
	return func(m *sdk.Machine) {
		sdk.WithSnapshot(mem, state, func(c *sdk.SnapshotConfig) { c.ResumeVM = true })(m)
		m.Handlers.FcInit = m.Handlers.FcInit.Remove(sdk.AddVsocksHandlerName)
	}, nil
}
