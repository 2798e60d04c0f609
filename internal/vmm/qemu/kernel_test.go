package qemu

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/vmm"
)

// elfWithNote writes a minimal x86-64 ELF whose one PT_NOTE segment holds
// a note named name of type typ.
func elfWithNote(t *testing.T, name string, typ uint32) string {
	t.Helper()
	le := binary.LittleEndian
	note := make([]byte, 12)
	nm := append([]byte(name), 0)
	le.PutUint32(note[0:], uint32(len(nm)))
	le.PutUint32(note[4:], 8)
	le.PutUint32(note[8:], typ)
	note = append(note, nm...)
	for len(note)%4 != 0 {
		note = append(note, 0)
	}
	note = append(note, make([]byte, 8)...) // the entry address
	const ehsize, phsize = 64, 56
	b := make([]byte, ehsize+phsize)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // 64-bit, little endian, version 1
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[32:], ehsize) // e_phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phsize)
	le.PutUint16(b[56:], 1) // e_phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 4)                  // PT_NOTE
	le.PutUint64(ph[8:], ehsize+phsize)      // p_offset
	le.PutUint64(ph[32:], uint64(len(note))) // p_filesz
	le.PutUint64(ph[40:], uint64(len(note))) // p_memsz
	p := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(p, append(b, note...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBootKernel(t *testing.T) {
	pvh := elfWithNote(t, "Xen", xenElfnotePhys32Entry)
	other := elfWithNote(t, "Xen", 5)
	gnu := elfWithNote(t, "GNU", xenElfnotePhys32Entry)
	notELF := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(notELF, []byte("MZ not an elf"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		vmlinux, want string
	}{
		{pvh, pvh},
		{other, "/bz"},  // an ELF QEMU cannot enter
		{gnu, "/bz"},    // the type under another name
		{notELF, "/bz"}, // not an ELF at all
		{filepath.Join(t.TempDir(), "missing"), "/bz"},
		{"", "/bz"},
	} {
		if got := bootKernel(vmm.Spec{Vmlinux: tt.vmlinux, BzImage: "/bz"}); got != tt.want {
			t.Errorf("bootKernel(vmlinux %s) = %s, want %s", tt.vmlinux, got, tt.want)
		}
	}
	// A restore loads what the state was saved with, whatever a boot
	// would pick now: state saved before the kernel was recorded came
	// from the bzImage.
	for _, tt := range []struct {
		saved, want string
	}{
		{"vmlinux", pvh},
		{"", "/bz"},
		{"vmlinuz", "/bz"},
	} {
		s := vmm.Spec{Vmlinux: pvh, BzImage: "/bz", RestoreDir: "/state", RestoreKernel: tt.saved}
		if got := bootKernel(s); got != tt.want {
			t.Errorf("restore of state saved from %q loads %s, want %s", tt.saved, got, tt.want)
		}
	}
}
