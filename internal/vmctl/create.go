package vmctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
	"banger/internal/vmm"
	"banger/internal/vmname"

	"golang.org/x/sys/unix"
)

// Stage names of create and start, in order. The CLI shows them as they run.
const (
	StageImage   = "image"
	StageDisks   = "disks"
	StageNetwork = "network"
	StageConfig  = "config drive"
	StageBoot    = "boot"
	StageAgent   = "agent ready"
)

// Create validates req, records the VM and boots it, reporting each stage
// on op. Everything made before a failing stage is undone through op's
// rollback. The returned VM is running and its agent answered.
//
// With req.From (VM@SNAP) the VM is made from that snapshot: its shape,
// image and VMM are the snapshot's, its disks are copies of the
// snapshot's and the restored guest is given the new VM's identity.
func (m *Manager) Create(ctx context.Context, op *operation.Op, req api.CreateVMRequest) (store.VM, error) {
	var from *templateMeta
	if req.From != "" {
		var err error
		if from, err = m.snapshotFor(ctx, req.From); err != nil {
			return store.VM{}, err
		}
	}
	return m.create(ctx, op, req, from)
}

// create is Create with the snapshot to restore from, if any, resolved.
func (m *Manager) create(ctx context.Context, op *operation.Op, req api.CreateVMRequest, from *templateMeta) (store.VM, error) {
	op.Plan(StageImage, StageDisks)
	if from != nil {
		if req.VMM != "" && req.VMM != "auto" && req.VMM != from.VMM {
			return store.VM{}, api.Errorf(api.CodeInvalid, "vmm %s: snapshot %s@%s was taken under %s", req.VMM, from.From, from.Name, from.VMM)
		}
		req.VMM, req.Image, req.Cold = from.VMM, from.ImageID, false
		req.Spec = api.VMSpec{VCPU: from.VCPU, MemoryMiB: from.MemoryMiB, DiskBytes: from.DiskBytes}
	}
	vm, vmmName, err := m.validate(ctx, req)
	if err != nil {
		return store.VM{}, err
	}
	pol, err := m.netPolicy(req, from)
	if err != nil {
		return store.VM{}, err
	}
	vm.NetPolicy = pol.Encode()
	ref := req.Image
	if ref == "" {
		ref = m.opt.Config.DefaultImage
	}

	var img store.Image
	if err := op.Do(StageImage, func(s *operation.Stage) error {
		var err error
		if from != nil {
			// A snapshot restores onto the very image it was taken on.
			img, err = m.opt.Store.GetImage(ctx, from.ImageID)
			if err != nil {
				return fmt.Errorf("snapshot %s@%s: its image %s: %w", from.From, from.Name, units.ShortID(from.ImageID), err)
			}
		} else if img, err = m.opt.Images.Ensure(ctx, op, ref); err != nil {
			return err
		}
		s.Detail("%s (%s)", img.Name, units.ShortID(img.ID))
		return nil
	}); err != nil {
		return store.VM{}, err
	}
	vm.ImageID = img.ID
	vm.VMM = vmmName

	unlock := m.lock(vm.ID)
	defer unlock()
	if err := m.opt.Store.CreateVM(ctx, vm); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return store.VM{}, api.Errorf(api.CodeConflict, "vm name %q is already taken", vm.Name)
		}
		return store.VM{}, fmt.Errorf("record vm %s: %w", vm.Name, err)
	}
	op.OnRollback(func(ctx context.Context) error { return m.opt.Store.DeleteVM(ctx, vm.ID) })
	dir := m.vmDir(vm.ID)
	op.OnRollback(func(context.Context) error { return os.RemoveAll(dir) })

	// A warm template of this image and shape restores the VM instead of
	// booting it; without one (or with --cold) it boots.
	var warm *savedMeta
	switch {
	case from != nil:
		meta := from.savedMeta
		meta.template = from
		warm = &meta
	case !req.Cold:
		warm = m.warmTemplate(ctx, op, vm)
	}
	if err := op.Do(StageDisks, func(s *operation.Stage) error {
		if warm != nil {
			method, err := m.cloneTemplateDisks(ctx, vm, warm)
			if err != nil {
				return err
			}
			what := "the warm template"
			if from != nil {
				what = "snapshot " + from.From + "@" + from.Name
			}
			s.Detail("work disk %s and overlay from %s (%s)", units.FormatSize(vm.DiskBytes), what, method)
			return nil
		}
		method, err := m.makeDisks(ctx, vm, img)
		if err != nil {
			return err
		}
		s.Detail("work disk %s (%s), overlay", units.FormatSize(vm.DiskBytes), method)
		return nil
	}); err != nil {
		return store.VM{}, err
	}
	if err := m.assignAddress(ctx, &vm); err != nil {
		return store.VM{}, err
	}
	makeTemplate := warm == nil && from == nil && !req.Cold && m.opt.Config.WarmTemplates != config.WarmManual
	vm, err = m.boot(ctx, op, vm, img, warm, !req.NoSSHWait || makeTemplate)
	if err != nil {
		return store.VM{}, err
	}
	if makeTemplate {
		if err := m.autoTemplate(ctx, op, vm); err != nil {
			return store.VM{}, err
		}
	}
	if from != nil {
		// The sessions' processes came back with the guest's memory.
		for _, ss := range from.Sessions {
			ss.VMID = vm.ID
			if err := m.opt.Store.CreateSession(ctx, ss); err != nil {
				return store.VM{}, fmt.Errorf("record session %s: %w", ss.Name, err)
			}
		}
	}
	return vm, nil
}

// validate checks req before anything is created and returns the VM row
// to record (state creating) and the VMM to use.
func (m *Manager) validate(ctx context.Context, req api.CreateVMRequest) (store.VM, string, error) {
	name := req.Name
	if name == "" {
		name = vmname.Generate(func(n string) bool {
			taken, err := m.opt.Store.NameTaken(ctx, n)
			return err != nil || taken
		})
	} else if err := vmname.Validate(name); err != nil {
		return store.VM{}, "", api.WithCode(api.CodeInvalid, err)
	}
	if taken, err := m.opt.Store.NameTaken(ctx, name); err != nil {
		return store.VM{}, "", err
	} else if taken {
		return store.VM{}, "", api.Errorf(api.CodeConflict, "name: vm %q already exists", name)
	}
	spec := req.Spec
	if err := spec.Validate(); err != nil {
		return store.VM{}, "", api.WithCode(api.CodeInvalid, err)
	}
	if hostMiB := m.opt.Host.MemoryMiB(); hostMiB > 0 && spec.MemoryMiB > hostMiB {
		return store.VM{}, "", api.WithCode(api.CodeInvalid, &api.SpecError{Field: api.SpecMemory,
			Rule: fmt.Sprintf("must be at most the host's %d MiB", hostMiB), Got: fmt.Sprintf("%d MiB", spec.MemoryMiB)})
	}
	if err := os.MkdirAll(m.opt.VMsDir, 0o700); err != nil {
		return store.VM{}, "", fmt.Errorf("create vms dir: %w", err)
	}
	if free, err := freeBytes(m.opt.VMsDir); err == nil {
		taken, vms, err := promised(m.opt.VMsDir, m.opt.ConsoleLogMax)
		if err != nil {
			return store.VM{}, "", err
		}
		need := int64(math.MaxInt64) // a disk size this large cannot fit anyway
		if spec.DiskBytes < math.MaxInt64/4 {
			need = 2*spec.DiskBytes + 2*m.opt.ConsoleLogMax
		}
		if err := checkSpace(m.opt.VMsDir, free, taken, vms, need); err != nil {
			return store.VM{}, "", err
		}
	}
	want := req.VMM
	if want == "" {
		want = m.opt.Config.VMM
	}
	kvm, _ := m.opt.Host.KVMUsable()
	standIn, _ := m.opt.Host.(interface{ FirecrackerStandIn() bool }) // a stand-in firecracker needs no KVM
	vmmName, err := vmm.SelectStandIn(want, m.opt.Host.Firecracker() != "", standIn != nil && standIn.FirecrackerStandIn(), kvm, m.opt.Host.QEMU() != "")
	if err != nil {
		return store.VM{}, "", api.WithCode(api.CodeInvalid, err)
	}
	if _, ok := m.opt.Drivers[vmmName]; !ok {
		return store.VM{}, "", api.Errorf(api.CodeInvalid, "vmm %s: driver not available in this daemon", vmmName)
	}
	token := make([]byte, 24)
	if _, err := rand.Read(token); err != nil {
		return store.VM{}, "", err
	}
	return store.VM{
		ID:           store.NewID(),
		Name:         name,
		VCPU:         spec.VCPU,
		MemoryMiB:    spec.MemoryMiB,
		DiskBytes:    spec.DiskBytes,
		State:        store.StateCreating,
		DesiredState: store.StateRunning,
		AgentToken:   hex.EncodeToString(token),
	}, vmmName, nil
}

func (m *Manager) vmDir(id string) string { return filepath.Join(m.opt.VMsDir, id) }

// freeBytes is the space available to this user on the filesystem of dir.
// VM disks are sparse, so this bounds what a VM could grow to.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// makeDisks creates the VM directory, the sparse overlay and the work disk
// cloned from the image's seed and grown to the VM's disk size. Nothing
// proportional to the image size is copied.
func (m *Manager) makeDisks(ctx context.Context, vm store.VM, img store.Image) (disk.Method, error) {
	dir := m.vmDir(vm.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create vm dir: %w", err)
	}
	if err := disk.MakeExt4(ctx, filepath.Join(dir, layout.OverlayFile), vm.DiskBytes, guestcontract.LabelOverlay, ""); err != nil {
		return "", fmt.Errorf("overlay disk: %w", err)
	}
	work := filepath.Join(dir, layout.WorkFile)
	method, err := disk.Clone(ctx, filepath.Join(img.Dir, image.FileWorkSeed), work)
	if err != nil {
		return "", fmt.Errorf("clone work disk: %w", err)
	}
	if err := disk.Resize(ctx, work, vm.DiskBytes); err != nil {
		return "", fmt.Errorf("grow work disk: %w", err)
	}
	return method, nil
}

// assignAddress leases the VM's address and vsock CID inside its row.
func (m *Manager) assignAddress(ctx context.Context, vm *store.VM) error {
	prefix := m.opt.Config.Network.Prefix()
	ip, err := m.opt.Store.AllocateLease(ctx, vm.ID, prefix, m.opt.Config.Network.Gateway())
	if err != nil {
		return fmt.Errorf("lease an address in %s: %w", prefix, err)
	}
	cid, err := m.opt.Store.AllocateCID(ctx, vm.ID)
	if err != nil {
		return err
	}
	updated, err := m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error {
		v.IP = ip.String()
		v.MAC = macForIP(ip)
		return nil
	})
	if err != nil {
		return err
	}
	updated.CID = cid
	*vm = updated
	return nil
}

// manifestOf decodes the image's manifest stored with its row.
func manifestOf(img store.Image) (*image.Manifest, error) {
	var man image.Manifest
	if len(img.Manifest) == 0 {
		return &man, nil
	}
	if err := json.Unmarshal(img.Manifest, &man); err != nil {
		return nil, fmt.Errorf("image %s manifest: %w", img.Name, err)
	}
	return &man, nil
}
