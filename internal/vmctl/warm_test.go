package vmctl

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/vmm"
)

// TestCreate_unusableWarmTemplateBootsCold: a template for the shape whose
// state cannot be checked against this host's VMM (here: a driver that
// cannot tell its version; elsewhere: another QEMU build, a corrupt file)
// is reported and the VM boots cold, with no restore stage and nothing of
// the template used. --cold skips the template without a word.
func TestCreate_unusableWarmTemplateBootsCold(t *testing.T) {
	h := newHarness(t)
	imgs, err := h.st.ListImages(t.Context())
	if err != nil || len(imgs) != 1 {
		t.Fatalf("images %v %v", imgs, err)
	}
	s := spec()
	dir := h.m.templateDir(imgs[0].ID, s.VCPU, s.MemoryMiB, s.DiskBytes)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	meta := templateMeta{
		savedMeta: savedMeta{SavedState: vmm.SavedState{VMM: vmm.QEMU, Version: "9.9.9", Files: []vmm.StateFile{{Name: "vmstate", Size: 1}}},
			VCPU: s.VCPU, MemoryMiB: s.MemoryMiB, Accel: vmm.AccelTCG},
		ImageID: imgs[0].ID, DiskBytes: s.DiskBytes, Token: strings.Repeat("x", 48), From: "warm-0",
	}
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(dir, layout.TemplateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}

	_, snap, err := h.create(t, api.CreateVMRequest{Name: "t1", Image: "debian-12", VMM: "qemu", Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(snap.Log, "\n"), "warm template unusable, booting cold") {
		t.Errorf("no word of the unusable template in the log: %q", snap.Log)
	}
	var stages []string
	for _, st := range snap.Stages {
		stages = append(stages, st.Name)
	}
	if got := strings.Join(stages, ","); got != "image,disks,network,config drive,boot,agent ready" {
		t.Errorf("stages %s, want a cold boot's", got)
	}

	_, snap, err = h.create(t, api.CreateVMRequest{Name: "t2", Image: "debian-12", VMM: "qemu", Spec: s, Cold: true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(snap.Log, "\n"), "warm template") {
		t.Errorf("--cold looked at the template: %q", snap.Log)
	}
}

// TestDropTemplates removes the templates of one image and keeps the
// others'.
func TestDropTemplates(t *testing.T) {
	m := New(Options{VMsDir: filepath.Join(t.TempDir(), "vms")})
	keep := m.templateDir("bbbbbbbbbbbbbbbbbbbb", 2, 1024, 2<<30)
	drop := []string{m.templateDir("aaaaaaaaaaaaaaaaaaaa", 2, 1024, 2<<30), m.templateDir("aaaaaaaaaaaaaaaaaaaa", 4, 4096, 8<<30)}
	for _, d := range append(drop, keep) {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.DropTemplates("aaaaaaaaaaaaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	for _, d := range drop {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", d, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("another image's template went: %v", err)
	}
	if err := New(Options{VMsDir: filepath.Join(t.TempDir(), "none", "vms")}).DropTemplates("x"); err != nil {
		t.Errorf("no warm dir: %v", err)
	}
}

// TestWarm_refusesFirecracker: a driver whose state loads only into the
// VM that saved it (here one that is no vmm.Relocator; Firecracker
// without the jailer says so itself) gets no template, refused before
// anything is made.
func TestWarm_refusesFirecracker(t *testing.T) {
	h := newHarness(t)
	h.m.opt.Drivers[vmm.Firecracker] = h.vmm
	h.m.opt.Host = fcHost{}
	op := h.ops.Start("image.warm", func(ctx context.Context, op *operation.Op) (any, error) {
		return h.m.Warm(ctx, op, api.CreateVMRequest{Image: "debian-12", VMM: "firecracker", Spec: spec()})
	})
	_, err := op.Wait(context.Background())
	if err == nil || !strings.Contains(err.Error(), "warm templates need state that restores into another vm") {
		t.Fatalf("Warm under firecracker = %v", err)
	}
	if vms, _ := h.st.ListVMs(context.Background()); len(vms) != 0 {
		t.Fatalf("a refused warm left VMs %v", vms)
	}
}

type fcHost struct{ fakeHost }

func (fcHost) KVMUsable() (bool, string) { return true, "" }
func (fcHost) Firecracker() string       { return "/usr/bin/firecracker" }

// TestVerifyState_cacheNeverHidesAChange: a state file verified once is
// not hashed again while unchanged, but a write that keeps its size and
// puts its modification time back is still caught (the change time moves).
func TestVerifyState_cacheNeverHidesAChange(t *testing.T) {
	m := New(Options{VMsDir: filepath.Join(t.TempDir(), "vms")})
	dir := t.TempDir()
	p := filepath.Join(dir, "vmstate")
	if err := os.WriteFile(p, []byte(strings.Repeat("s", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	files, err := vmm.DescribeState(dir, "vmstate")
	if err != nil {
		t.Fatal(err)
	}
	st := vmm.SavedState{VMM: vmm.QEMU, Files: files}
	for range 2 {
		if err := m.verifyState(dir, st); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.verified) != 1 {
		t.Fatalf("verified cache %v", m.verified)
	}
	fi, _ := os.Stat(p)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("X"), 100)
	f.Close()
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := m.verifyState(dir, st); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("verifyState after an in-place write = %v", err)
	}
}
