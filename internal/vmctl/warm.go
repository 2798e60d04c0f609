package vmctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/disk"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
	"banger/internal/vmm"
	"banger/internal/wait"
)

// StageTemplate is the stage of a warm that turns the saved guest into
// the image's template.
const StageTemplate = "template"

// templateMeta is a warm template's TemplateFile: the saved state as for a
// suspend, plus what a new VM restored from it needs.
type templateMeta struct {
	savedMeta
	ImageID   string `json:"image_id"`
	DiskBytes int64  `json:"disk_bytes"`
	// Token is the agent token of the guest the template was made from;
	// every VM restored from it answers to it until re-identified.
	Token string `json:"token"`
	// From is the name of the VM the template was made from.
	From string `json:"from"`
	// Name is set for a VM's named snapshot (not for a warm template).
	Name string `json:"name,omitempty"`
	// FileSync is the fileSyncDigest when a warm template was made.
	FileSync string `json:"file_sync,omitempty"`
	// Sessions are the source VM's sessions when the state was saved:
	// their processes are in the saved memory, so a VM made from it
	// records them as its own.
	Sessions []store.Session `json:"sessions,omitempty"`
	// NetPolicy is the source VM's egress policy (egress.Policy.Encode)
	// when a named snapshot was taken; VMs made from it keep it unless
	// their create says otherwise.
	NetPolicy string `json:"net_policy,omitempty"`
}

// templateDisks are the VM files a template keeps and a warm VM clones.
var templateDisks = []string{layout.OverlayFile, layout.WorkFile, layout.ConfigDriveFile}

// templateKey names the template of an image for one machine shape.
func templateKey(imageID string, vcpu, memMiB int, diskBytes int64) string {
	id := imageID
	if len(id) > 16 {
		id = id[:16]
	}
	return fmt.Sprintf("%s-%dc-%dm-%s", id, vcpu, memMiB, units.FormatSize(diskBytes))
}

func (m *Manager) templateDir(imageID string, vcpu, memMiB int, diskBytes int64) string {
	return filepath.Join(m.opt.WarmDir, templateKey(imageID, vcpu, memMiB, diskBytes))
}

// warmTemplate returns the template vm can be restored from, checked
// against this host's VMM, or nil with the reason on op when there is
// none or it cannot be used (the VM then boots cold).
func (m *Manager) warmTemplate(ctx context.Context, op *operation.Op, vm store.VM) *savedMeta {
	dir := m.templateDir(vm.ImageID, vm.VCPU, vm.MemoryMiB, vm.DiskBytes)
	t, err := loadTemplate(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil && (t.ImageID != vm.ImageID || t.DiskBytes != vm.DiskBytes) {
		err = errors.New("its description does not match its directory")
	}
	if err == nil {
		var now string
		if now, err = m.fileSyncNow(); err == nil && now != t.FileSync {
			err = errors.New("the [[file_sync]] files changed since it was made, and a restored guest would keep the old ones (banger image warm makes it again)")
		}
	}
	if err == nil {
		t.template = &t
		var accel string
		if accel, _, err = m.accel(vm.VMM); err == nil {
			err = m.checkSaved(ctx, vm, t.savedMeta, accel)
		}
	}
	if err != nil {
		op.Logf("warm template unusable, booting cold: %v", err)
		return nil
	}
	meta := t.savedMeta
	meta.template = &t
	meta.checked = true
	return &meta
}

// cloneTemplateDisks gives a warm VM its own copies of the template's
// disks (reflinks where the filesystem has them, else sparse copies).
func (m *Manager) cloneTemplateDisks(ctx context.Context, vm store.VM, t *savedMeta) (disk.Method, error) {
	dir := m.vmDir(vm.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create vm dir: %w", err)
	}
	var method disk.Method
	for _, f := range templateDisks {
		var err error
		if method, err = disk.Clone(ctx, filepath.Join(t.dir, f), filepath.Join(dir, f)); err != nil {
			return "", fmt.Errorf("clone %s from the warm template: %w", f, err)
		}
	}
	return method, nil
}

// reidentify gives a guest restored from a warm template this VM's
// identity: host-made ssh host keys (pinned first), hostname, MAC,
// address, resolver and agent token. It talks to the guest with the
// template's token, over the VM's own agent connection.
func (m *Manager) reidentify(ctx context.Context, vm store.VM, h vmm.Handles, t *templateMeta) error {
	id, err := m.Identity(vm)
	if err != nil {
		return err
	}
	// Made on the host: ssh-keygen in the guest would be slow under
	// software emulation (the VM keeps it for its later cold boots).
	priv, pub, err := m.hostKey(ctx, vm)
	if err != nil {
		return err
	}
	if m.opt.KnownHosts != nil {
		if err := m.opt.KnownHosts.Set(vm.Name+".vm", []string{pub}); err != nil {
			return fmt.Errorf("pin ssh host key: %w", err)
		}
	}
	c := m.agentClientAs(vm, h, t.Token)
	ctx, cancel := context.WithTimeout(ctx, m.opt.AgentTimeout)
	defer cancel()
	var last error
	err = wait.Until(ctx, 100*time.Millisecond, func() (bool, error) {
		if !vmm.Alive(h) {
			return false, fmt.Errorf("%s exited after restore (console: %s, log: %s)", vm.VMM, h.ConsoleLog, h.VMMLog)
		}
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		last = c.Reidentify(actx, agent.Reidentify{Identity: id, HostKeys: []agent.HostKey{{Type: "ed25519", Private: priv, Public: pub}}})
		acancel()
		var ae *agentclient.APIError
		if errors.As(last, &ae) {
			// The agent answered: retrying will not change its mind.
			return false, fmt.Errorf("guest refused its new identity: %w", last)
		}
		return last == nil, nil
	})
	if err != nil && err == ctx.Err() {
		return fmt.Errorf("restored guest did not take its identity within %s: %v", m.opt.AgentTimeout, last)
	}
	return err
}

// relocatable reports nil when state saved by the VMM name (of the running
// VM h, or of a VM it would start now when h is zero) restores into
// another VM, else why not.
func (m *Manager) relocatable(ctx context.Context, name string, h vmm.Handles) error {
	r, ok := m.opt.Drivers[name].(vmm.Relocator)
	if !ok {
		return fmt.Errorf("%s cannot restore saved state into another vm", name)
	}
	return r.Relocatable(ctx, h)
}

// autoTemplate makes the image's warm template for vm's shape from vm
// itself, just booted cold, when there is none (or an unusable one):
// later creates of the shape restore instead of booting. It costs this
// create one save (about as long as a suspend). Failing to make it is a
// warning and the VM runs on; it is an error only when the VM could not
// be let run again. Drivers that cannot save or tell their version are
// skipped: their templates could never be checked.
func (m *Manager) autoTemplate(ctx context.Context, op *operation.Op, vm store.VM) error {
	h, ok := m.alive(vm.ID)
	if !ok || m.relocatable(ctx, h.VMM, h) != nil {
		return nil
	}
	if _, ok := m.opt.Drivers[h.VMM].(vmm.Versioner); !ok {
		return nil
	}
	if _, err := m.snapshotter(vm, h); err != nil {
		return nil
	}
	dir := m.templateDir(vm.ImageID, vm.VCPU, vm.MemoryMiB, vm.DiskBytes)
	if err := os.RemoveAll(dir); err != nil {
		op.Logf("warning: warm template not made: remove the unusable one: %v", err)
		return nil
	}
	t := templateMeta{ImageID: vm.ImageID, DiskBytes: vm.DiskBytes, Token: vm.AgentToken, From: vm.Name}
	var err error
	if t.FileSync, err = m.fileSyncNow(); err != nil {
		op.Logf("warning: warm template not made: %v", err)
		return nil
	}
	if _, err := m.saveLive(ctx, op, vm, h, dir, t, templateStages); err != nil {
		if cur, ok := m.opt.Handles.Get(vm.ID); ok && cur.Paused {
			return fmt.Errorf("warm template: %w", err)
		}
		op.Logf("warning: warm template not made (vm %s runs on): %v", vm.Name, err)
		return nil
	}
	op.Logf("made the warm template of %d vcpu · %d MiB · %s disk: creates of this shape now restore from it (warm_templates = \"manual\" in config turns this off)",
		vm.VCPU, vm.MemoryMiB, units.FormatSize(vm.DiskBytes))
	return nil
}

// Template is what Warm made.
type Template struct {
	Image      store.Image
	VMM        string
	VCPU       int
	MemoryMiB  int
	DiskBytes  int64
	StateBytes int64
	CreatedAt  time.Time
}

// Warm makes (or remakes) the warm template of req's image and shape: it
// creates a VM cold, saves it once its agent answers (as suspend does),
// keeps its state and disks as the template and deletes the VM. Later
// creates of the same image and shape restore from it.
func (m *Manager) Warm(ctx context.Context, op *operation.Op, req api.CreateVMRequest) (Template, error) {
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	req.Name = "warm-" + hex.EncodeToString(suffix)
	req.Cold = true
	if _, vmmName, err := m.validate(ctx, req); err != nil {
		return Template{}, err
	} else if err := m.relocatable(ctx, vmmName, vmm.Handles{}); err != nil {
		return Template{}, api.Errorf(api.CodeInvalid, "warm templates need state that restores into another vm (or --vmm qemu): %v", err)
	}
	vm, err := m.Create(ctx, op, req)
	if err != nil {
		return Template{}, err
	}
	t, err := m.makeTemplate(ctx, op, vm)
	if derr := m.Delete(context.WithoutCancel(ctx), vm.ID, true); derr != nil {
		err = errors.Join(err, fmt.Errorf("delete template vm %s: %w", vm.Name, derr))
	}
	return t, err
}

func (m *Manager) makeTemplate(ctx context.Context, op *operation.Op, vm store.VM) (Template, error) {
	if _, err := m.Suspend(ctx, op, vm.ID); err != nil {
		return Template{}, err
	}
	var out Template
	err := op.Do(StageTemplate, func(s *operation.Stage) error {
		meta, ok, err := m.saved(vm.ID)
		if err != nil || !ok {
			return errors.Join(errors.New("the saved state is missing"), err)
		}
		img, err := m.opt.Store.GetImage(ctx, vm.ImageID)
		if err != nil {
			return err
		}
		dir := m.templateDir(vm.ImageID, vm.VCPU, vm.MemoryMiB, vm.DiskBytes)
		tmp := dir + ".tmp"
		_ = os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		moves := map[string]string{}
		for _, f := range meta.Files {
			moves[filepath.Join(meta.dir, f.Name)] = filepath.Join(tmp, f.Name)
		}
		for _, f := range templateDisks {
			moves[filepath.Join(m.vmDir(vm.ID), f)] = filepath.Join(tmp, f)
		}
		for from, to := range moves {
			if err := os.Rename(from, to); err != nil {
				return fmt.Errorf("keep %s in the template: %w", filepath.Base(from), err)
			}
		}
		t := templateMeta{savedMeta: meta, ImageID: vm.ImageID, DiskBytes: vm.DiskBytes, Token: vm.AgentToken, From: vm.Name}
		if t.FileSync, err = m.fileSyncNow(); err != nil {
			return err
		}
		if err := writeTemplate(tmp, t); err != nil {
			return err
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.Rename(tmp, dir); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
			return err
		}
		var size int64
		for _, f := range meta.Files {
			size += f.Size
		}
		out = Template{Image: img, VMM: vm.VMM, VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes, StateBytes: size, CreatedAt: meta.SavedAt}
		s.Detail("%s · %d vcpu · %d MiB · %s disk, %s of state", img.Name, vm.VCPU, vm.MemoryMiB, units.FormatSize(vm.DiskBytes), units.Bytes(size))
		return nil
	})
	return out, err
}

// DropTemplates removes every warm template of the image imageID (the
// image is being removed: they restore nothing without it).
func (m *Manager) DropTemplates(imageID string) error {
	prefix := templateKey(imageID, 0, 0, 0)
	prefix = prefix[:strings.Index(prefix, "-0c-")+1]
	ents, err := os.ReadDir(m.opt.WarmDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			errs = append(errs, os.RemoveAll(filepath.Join(m.opt.WarmDir, e.Name())))
		}
	}
	return errors.Join(errs...)
}
