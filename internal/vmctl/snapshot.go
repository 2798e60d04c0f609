package vmctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/disk"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
	"banger/internal/vmm"
	"banger/internal/vmname"
)

// StageResume is the stage of a snapshot that lets the source VM run on.
const StageResume = "resume"

// Names inside a VM's SnapshotsDir that no user snapshot can take (user
// names never start with a dot): the marker of a snapshot that froze a
// running VM and has not let it run again yet, and the prefix of a fork's
// own snapshot. Reconcile uses both to clean up after a daemon killed in
// the middle.
const (
	snapshotResumeMarker = ".resume"
	forkSnapshotPrefix   = ".fork-"
)

// MaxSnapshotName bounds a snapshot name.
const MaxSnapshotName = 40

// Snapshot is a named snapshot of a VM: its memory, device state and
// disks as they were at one instant, from which new VMs are made (see
// CreateVMRequest.From and Fork). It lives in the VM's directory and goes
// with the VM.
type Snapshot struct {
	VM         store.VM
	Name       string
	ImageID    string
	VMM        string
	VCPU       int
	MemoryMiB  int
	DiskBytes  int64
	StateBytes int64
	Sessions   int
	CreatedAt  time.Time
}

// ValidateSnapshotName checks a snapshot name: 1 to MaxSnapshotName
// lowercase letters, digits and inner hyphens, so it is a file name and
// reads well after the @ of NAME@SNAP.
func ValidateSnapshotName(name string) error {
	switch {
	case name == "":
		return errors.New("invalid snapshot name: must not be empty")
	case len(name) > MaxSnapshotName:
		return fmt.Errorf("invalid snapshot name %q: %d characters, at most %d allowed", name, len(name), MaxSnapshotName)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("invalid snapshot name %q: must not start or end with a hyphen", name)
	}
	for _, c := range name {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			continue
		}
		return fmt.Errorf("invalid snapshot name %q: character %q; use lowercase letters, digits and hyphens", name, c)
	}
	return nil
}

// ParseSnapshotRef splits VM@SNAP.
func ParseSnapshotRef(ref string) (vm, snap string, err error) {
	vm, snap, ok := strings.Cut(ref, "@")
	if !ok || vm == "" || snap == "" {
		return "", "", fmt.Errorf("snapshot %q: want VM@SNAPSHOT, as in web@before-upgrade", ref)
	}
	if err := ValidateSnapshotName(snap); err != nil {
		return "", "", err
	}
	return vm, snap, nil
}

func (m *Manager) snapshotsDir(vmID string) string {
	return filepath.Join(m.vmDir(vmID), layout.SnapshotsDir)
}

// loadTemplate reads the TemplateFile of a warm template or snapshot
// directory.
func loadTemplate(dir string) (templateMeta, error) {
	b, err := os.ReadFile(filepath.Join(dir, layout.TemplateFile))
	if err != nil {
		return templateMeta{}, err
	}
	var t templateMeta
	if err := json.Unmarshal(b, &t); err != nil {
		return templateMeta{}, fmt.Errorf("read %s: %w", layout.TemplateFile, err)
	}
	if t.ImageID == "" || t.Token == "" || t.VCPU < 1 || t.MemoryMiB < 1 || t.DiskBytes < 1 {
		return templateMeta{}, fmt.Errorf("%s is incomplete", layout.TemplateFile)
	}
	t.dir = dir
	return t, nil
}

// writeTemplate writes t as dir's TemplateFile through atomicfile, which
// also syncs dir, so the files already moved into it are durable before
// dir is renamed into place.
func writeTemplate(dir string, t templateMeta) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, layout.TemplateFile), append(b, '\n'), 0o600)
}

func snapshotOf(vm store.VM, t templateMeta) Snapshot {
	var size int64
	for _, f := range t.Files {
		size += f.Size
	}
	return Snapshot{VM: vm, Name: t.Name, ImageID: t.ImageID, VMM: t.VMM, VCPU: t.VCPU, MemoryMiB: t.MemoryMiB,
		DiskBytes: t.DiskBytes, StateBytes: size, Sessions: len(t.Sessions), CreatedAt: t.SavedAt}
}

// TakeSnapshot saves a running VM's memory, device state and disks as the
// snapshot name ("" picks snap-N). The VM is frozen while its state is
// written and its disks cloned, then runs on with its clock corrected. On
// failure nothing of the snapshot is left and the VM runs as before.
func (m *Manager) TakeSnapshot(ctx context.Context, op *operation.Op, ref, name string) (Snapshot, error) {
	if name != "" {
		if err := ValidateSnapshotName(name); err != nil {
			return Snapshot{}, api.WithCode(api.CodeInvalid, fmt.Errorf("snapshot name: %w", err))
		}
	}
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return Snapshot{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if name == "" {
		name = m.nextSnapshotName(vm.ID)
	}
	return m.takeSnapshot(ctx, op, vm, name)
}

// nextSnapshotName is the first snap-N the VM has no snapshot of.
func (m *Manager) nextSnapshotName(vmID string) string {
	for i := 1; ; i++ {
		name := fmt.Sprintf("snap-%d", i)
		if _, err := os.Stat(filepath.Join(m.snapshotsDir(vmID), name)); errors.Is(err, os.ErrNotExist) {
			return name
		}
	}
}

// takeSnapshot is TakeSnapshot with the VM locked and name settled.
func (m *Manager) takeSnapshot(ctx context.Context, op *operation.Op, vm store.VM, name string) (Snapshot, error) {
	h, ok := m.alive(vm.ID)
	if !ok {
		return Snapshot{}, api.Errorf(api.CodeConflict, "vm %s is not running: a snapshot is taken of a running vm (banger vm start %s)", vm.Name, vm.Name)
	}
	if err := m.relocatable(ctx, h.VMM, h); err != nil {
		return Snapshot{}, api.Errorf(api.CodeInvalid, "vm %s: snapshots and forks need state that restores into another vm: %v", vm.Name, err)
	}
	dir := filepath.Join(m.snapshotsDir(vm.ID), name)
	if _, err := os.Stat(dir); err == nil {
		return Snapshot{}, api.Errorf(api.CodeConflict, "vm %s already has a snapshot %q (remove it with: banger vm snapshot rm %s@%s)", vm.Name, name, vm.Name, name)
	}
	sessions, err := m.opt.Store.ListSessions(ctx, vm.ID)
	if err != nil {
		return Snapshot{}, err
	}
	img, err := m.opt.Store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return Snapshot{}, fmt.Errorf("vm %s: image %s: %w", vm.Name, units.ShortID(vm.ImageID), err)
	}
	t := templateMeta{ImageID: vm.ImageID, DiskBytes: vm.DiskBytes, Token: vm.AgentToken, From: vm.Name, Name: name, Sessions: sessions,
		NetPolicy: vm.NetPolicy}
	t, err = m.saveLive(ctx, op, vm, h, dir, t, snapshotStages)
	if t.Token == "" {
		return Snapshot{}, err
	}
	if err == nil {
		op.Logf("snapshot %s@%s: %s image, %d session(s)", vm.Name, name, img.Name, len(sessions))
	}
	// With t whole and err set, only letting the source run on failed.
	return snapshotOf(vm, t), err
}

// checkSaveSpace refuses a save into parent (created if missing) that
// might not fit: up to the guest's memory of state plus the blocks its
// disks hold (sparse copies take no more), leaving what the VMs already
// promised alone. Failing half-way would cost the same freeze for
// nothing.
func (m *Manager) checkSaveSpace(vm store.VM, parent string) error {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return err
	}
	free, err := freeBytes(parent)
	if err != nil {
		return nil // cannot tell: the save reports ENOSPC if it comes
	}
	need := int64(vm.MemoryMiB) << 20
	for _, f := range templateDisks {
		if _, used, ok := usage(filepath.Join(m.vmDir(vm.ID), f)); ok {
			need += used
		}
	}
	taken, _, err := promised(m.opt.VMsDir, m.opt.ConsoleLogMax)
	if err != nil {
		return err
	}
	if free-taken >= need {
		return nil
	}
	return api.Errorf(api.CodeInvalid, "not enough disk space in %s to save vm %s: up to %s (its %d MiB of memory and the blocks its disks hold); %s free, of which %s may still be written by existing vms; delete vms or snapshots, or free space",
		parent, vm.Name, units.FormatSize(need), vm.MemoryMiB, units.FormatSize(free), units.FormatSize(taken))
}

// saveStages names the stages of saveLive.
type saveStages struct{ save, disks, resume string }

var (
	snapshotStages = saveStages{StageSave, StageDisks, StageResume}
	templateStages = saveStages{StageTemplate, StageTemplate + " disks", StageResume}
)

// saveLive freezes the running VM, saves its state and copies of its
// disks into dir (written next to it, renamed into place; dir must not
// exist) described by t completed with the saved state, and lets the VM
// run on with its clock stepped and its random pool reseeded. A VM that
// was paused stays paused. On failure nothing of dir is left and the VM
// runs as before; the returned description is whole (Token set) when only
// letting the VM run on failed. The caller holds the VM's lock.
func (m *Manager) saveLive(ctx context.Context, op *operation.Op, vm store.VM, h vmm.Handles, dir string, t templateMeta, stages saveStages) (templateMeta, error) {
	snap, err := m.snapshotter(vm, h)
	if err != nil {
		return templateMeta{}, err
	}
	if err := m.checkSaveSpace(vm, filepath.Dir(dir)); err != nil {
		return templateMeta{}, err
	}
	op.Plan(stages.save, stages.disks, stages.resume)
	tmp := dir + "." + units.ShortID(vm.ID) + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return templateMeta{}, fmt.Errorf("create %s: %w", filepath.Base(tmp), err)
	}
	wasPaused := h.Paused
	marker := filepath.Join(m.snapshotsDir(vm.ID), snapshotResumeMarker)
	// let the VM run again: the guest keeps no trace of the save.
	resume := func() error {
		if wasPaused {
			return nil
		}
		if err := snap.Resume(context.WithoutCancel(ctx), h); err != nil {
			return fmt.Errorf("let vm %s run again: %w", vm.Name, err)
		}
		if err := m.opt.Handles.Set(vm.ID, h); err != nil {
			return err
		}
		return os.Remove(marker)
	}
	fail := func(err error) (templateMeta, error) {
		return templateMeta{}, errors.Join(err, os.RemoveAll(tmp), resume())
	}
	if !wasPaused {
		// Written before the guest is frozen: a daemon killed from here
		// on finds it at its next start and lets the guest run again.
		if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
			return fail(err)
		}
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return fail(err)
		}
		paused := h
		paused.Paused = true
		if err := m.opt.Handles.Set(vm.ID, paused); err != nil {
			return fail(err)
		}
	}
	var st vmm.SavedState
	if err := op.Do(stages.save, func(s *operation.Stage) error {
		if !wasPaused {
			m.quiesceAgent(ctx, vm, h)
		}
		start := time.Now()
		var err error
		if st, err = snap.Save(ctx, h, tmp); err != nil {
			return err
		}
		var size int64
		for _, f := range st.Files {
			size += f.Size
		}
		s.Detail("%s of state in %s", units.Bytes(size), time.Since(start).Round(time.Millisecond))
		return nil
	}); err != nil {
		return fail(err)
	}
	if err := op.Do(stages.disks, func(s *operation.Stage) error {
		// The VMM flushed its disks when the save completed and the
		// guest is stopped: the copies match the saved memory.
		var method disk.Method
		for _, f := range templateDisks {
			var err error
			if method, err = disk.Clone(ctx, filepath.Join(m.vmDir(vm.ID), f), filepath.Join(tmp, f)); err != nil {
				return fmt.Errorf("copy %s: %w", f, err)
			}
		}
		s.Detail("overlay, work disk (%s) and config drive (%s)", units.FormatSize(vm.DiskBytes), method)
		return nil
	}); err != nil {
		return fail(err)
	}
	t.savedMeta = savedMeta{SavedState: st, VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, Accel: h.Accel, SavedAt: time.Now()}
	if err := writeTemplate(tmp, t); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fail(err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return fail(errors.Join(err, os.RemoveAll(dir)))
	}
	err = op.Do(stages.resume, func(s *operation.Stage) error {
		if wasPaused {
			s.Detail("vm %s stays paused", vm.Name)
			return nil
		}
		if err := resume(); err != nil {
			return err
		}
		s.Detail("%s", m.thaw(ctx, op, vm, m.agentClient(vm, h), false))
		return nil
	})
	return t, err
}

// Snapshots lists the named snapshots of the VM ref, or of every VM when
// ref is empty, oldest first. Unreadable ones are listed by name with a
// zero CreatedAt.
func (m *Manager) Snapshots(ctx context.Context, ref string) ([]Snapshot, error) {
	var vms []store.VM
	if ref != "" {
		vm, err := m.opt.Store.GetVM(ctx, ref)
		if err != nil {
			return nil, err
		}
		vms = []store.VM{vm}
	} else {
		var err error
		if vms, err = m.opt.Store.ListVMs(ctx); err != nil {
			return nil, err
		}
	}
	var out []Snapshot
	for _, vm := range vms {
		ents, err := os.ReadDir(m.snapshotsDir(vm.ID))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !e.IsDir() || ValidateSnapshotName(e.Name()) != nil {
				continue // in-progress, a fork's own, or not ours
			}
			t, err := loadTemplate(filepath.Join(m.snapshotsDir(vm.ID), e.Name()))
			if err != nil {
				m.log.Warn("unreadable snapshot", "vm", vm.Name, "snapshot", e.Name(), "err", err)
				out = append(out, Snapshot{VM: vm, Name: e.Name()})
				continue
			}
			t.Name = e.Name()
			out = append(out, snapshotOf(vm, t))
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// DeleteSnapshot removes the snapshot VM@SNAP.
func (m *Manager) DeleteSnapshot(ctx context.Context, ref string) error {
	vmRef, name, err := ParseSnapshotRef(ref)
	if err != nil {
		return api.WithCode(api.CodeInvalid, err)
	}
	vm, err := m.opt.Store.GetVM(ctx, vmRef)
	if err != nil {
		return err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	dir := filepath.Join(m.snapshotsDir(vm.ID), name)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return api.Errorf(api.CodeNotFound, "vm %s has no snapshot %q (banger vm snapshot list %s)", vm.Name, name, vm.Name)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove snapshot %s@%s: %w", vm.Name, name, err)
	}
	return nil
}

// snapshotFor resolves VM@SNAP to the snapshot's description, for a
// create from it. The files are checked later, against the new VM.
func (m *Manager) snapshotFor(ctx context.Context, ref string) (*templateMeta, error) {
	vmRef, name, err := ParseSnapshotRef(ref)
	if err != nil {
		return nil, api.WithCode(api.CodeInvalid, fmt.Errorf("create from snapshot: %w", err))
	}
	vm, err := m.opt.Store.GetVM(ctx, vmRef)
	if err != nil {
		return nil, fmt.Errorf("create from snapshot %s: %w", ref, err)
	}
	return m.loadSnapshot(vm, name)
}

func (m *Manager) loadSnapshot(vm store.VM, name string) (*templateMeta, error) {
	t, err := loadTemplate(filepath.Join(m.snapshotsDir(vm.ID), name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, api.Errorf(api.CodeNotFound, "vm %s has no snapshot %q (banger vm snapshot list %s)", vm.Name, name, vm.Name)
	}
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "snapshot %s@%s is unusable: %v", vm.Name, name, err)
	}
	t.Name = name
	return &t, nil
}

// sweepSnapshots cleans up after a snapshot or fork the daemon died in:
// a VM frozen for a snapshot runs again, half-written snapshots and a
// fork's own snapshot are removed. h and alive describe the VM's VMM.
func (m *Manager) sweepSnapshots(ctx context.Context, vm store.VM, h vmm.Handles, alive bool) error {
	dir := m.snapshotsDir(vm.ID)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.Name() == snapshotResumeMarker:
			if alive && h.Paused {
				if err := m.resumeFrozen(ctx, vm, h); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			errs = append(errs, os.Remove(p))
		case strings.HasSuffix(e.Name(), ".tmp") || strings.HasPrefix(e.Name(), forkSnapshotPrefix):
			m.log.Warn("removing the snapshot of an interrupted snapshot or fork", "vm", vm.Name, "dir", e.Name())
			errs = append(errs, os.RemoveAll(p))
		}
	}
	return errors.Join(errs...)
}

// resumeFrozen lets a VM frozen by an interrupted snapshot run again.
func (m *Manager) resumeFrozen(ctx context.Context, vm store.VM, h vmm.Handles) error {
	snap, err := m.snapshotter(vm, h)
	if err != nil {
		return err
	}
	if err := snap.Resume(ctx, h); err != nil {
		return fmt.Errorf("resume vm %s after an interrupted snapshot: %w", vm.Name, err)
	}
	h.Paused = false
	m.log.Warn("resumed a vm frozen by an interrupted snapshot", "vm", vm.Name)
	return m.opt.Handles.Set(vm.ID, h)
}

// MaxForks bounds the copies one fork makes.
const MaxForks = 16

// Fork makes n live copies of the running VM ref, named PREFIX-1 to
// PREFIX-n (PREFIX defaults to the VM's name): one snapshot is taken, each
// copy is created from it (own disks, address, MAC, DNS name, ssh host
// keys and agent token; the guest's processes and sessions carry over),
// and the snapshot is removed. The source runs on. Either every copy is
// made or none is: a failure rolls back the copies already made.
func (m *Manager) Fork(ctx context.Context, op *operation.Op, ref string, n int, prefix string) ([]store.VM, error) {
	if n < 1 || n > MaxForks {
		return nil, api.Errorf(api.CodeInvalid, "fork count %d: must be between 1 and %d", n, MaxForks)
	}
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return nil, err
	}
	if prefix == "" {
		prefix = vm.Name
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i+1)
		if err := vmname.Validate(names[i]); err != nil {
			return nil, api.WithCode(api.CodeInvalid, fmt.Errorf("fork name prefix %s: %w", prefix, err))
		}
		if taken, err := m.opt.Store.NameTaken(ctx, names[i]); err != nil {
			return nil, err
		} else if taken {
			return nil, api.Errorf(api.CodeConflict, "fork name prefix %s: vm %q already exists (choose another prefix)", prefix, names[i])
		}
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	own := forkSnapshotPrefix + hex.EncodeToString(suffix)
	unlock := m.lock(vm.ID)
	_, err = m.takeSnapshot(ctx, op, vm, own)
	unlock()
	defer func() {
		if err := os.RemoveAll(filepath.Join(m.snapshotsDir(vm.ID), own)); err != nil {
			m.log.Warn("remove the fork's snapshot", "vm", vm.Name, "err", err)
		}
	}()
	if err != nil {
		return nil, err
	}
	t, err := m.loadSnapshot(vm, own)
	if err != nil {
		return nil, err
	}
	copies := make([]store.VM, 0, n)
	for i, name := range names {
		op.Logf("copy %d of %d: %s", i+1, n, name)
		c, err := m.create(ctx, op, api.CreateVMRequest{Name: name}, t)
		if err != nil {
			return nil, fmt.Errorf("fork %s: copy %s: %w", vm.Name, name, err)
		}
		copies = append(copies, c)
	}
	return copies, nil
}
