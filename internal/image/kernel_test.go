package image

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/image/imagetest"
	"banger/internal/testenv"

	"github.com/ulikunitz/xz"
)

// fakeELF returns size bytes that start with the ELF magic and look a
// little like code: compressible, with plenty of E8/E9 (CALL/JMP) bytes
// so the BCJ filter has work to do.
func fakeELF(size int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, size)
	copy(b, elfMagic)
	ops := []byte{0xe8, 0xe9, 0x48, 0x89, 0xc3, 0x00, 0xff, 0x0f}
	for i := len(elfMagic); i < size; i++ {
		if rng.IntN(4) == 0 {
			b[i] = byte(rng.IntN(256))
		} else {
			b[i] = ops[rng.IntN(len(ops))]
		}
	}
	return b
}

// fakeBzImage wraps a payload in a minimal x86 boot header (protocol
// 2.15, one setup sector) with a kernel_version string.
func fakeBzImage(payload []byte, version string) []byte {
	const setupSects = 1
	pm := (setupSects + 1) * 512
	const payloadOff = 0x200 // from the protected-mode code
	img := make([]byte, pm+payloadOff+len(payload)+64)
	img[hdrSetupSects] = setupSects
	binary.LittleEndian.PutUint16(img[hdrBootFlag:], 0xaa55)
	copy(img[hdrMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[hdrVersion:], 0x20f)
	binary.LittleEndian.PutUint16(img[hdrKernelVersion:], 0x300-0x200)
	copy(img[0x300:], version+"\x00")
	binary.LittleEndian.PutUint32(img[hdrPayloadOffset:], payloadOff)
	binary.LittleEndian.PutUint32(img[hdrPayloadLength:], uint32(len(payload)))
	copy(img[pm+payloadOff:], payload)
	return img
}

// compressCLI runs a compressor the way the kernel build does; a missing
// tool skips outside CI.
func compressCLI(t *testing.T, data []byte, args ...string) []byte {
	t.Helper()
	testenv.RequireCommand(t, args[0])
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v: %s", args, err, stderr.String())
	}
	return out.Bytes()
}

// sizeAppend appends the uncompressed size like the kernel's size_append.
func sizeAppend(p []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(p, uint32(n))
}

func TestExtractVmlinux_Synthetic(t *testing.T) {
	small := fakeELF(1 << 20)
	big := fakeELF(9 << 20) // more than one 8 MiB lz4 legacy block
	goXZ := func(t *testing.T, data []byte) []byte {
		var buf bytes.Buffer
		w, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name string
		elf  []byte
		make func(t *testing.T, data []byte) []byte
		want Compression
	}{
		{"gzip", small, func(t *testing.T, d []byte) []byte { return compressCLI(t, d, "gzip", "-n", "-9") }, CompressGzip},
		{"xz with x86 BCJ", small, func(t *testing.T, d []byte) []byte {
			return sizeAppend(compressCLI(t, d, "xz", "--check=crc32", "--x86", "--lzma2=dict=32MiB"), len(d))
		}, CompressXZ},
		{"xz plain", small, func(t *testing.T, d []byte) []byte { return sizeAppend(goXZ(t, d), len(d)) }, CompressXZ},
		{"zstd", small, func(t *testing.T, d []byte) []byte {
			return sizeAppend(compressCLI(t, d, "zstd", "-q", "-19", "-c"), len(d))
		}, CompressZstd},
		{"lz4 legacy", big, func(t *testing.T, d []byte) []byte {
			return sizeAppend(compressCLI(t, d, "lz4", "-q", "-l", "-9", "-c"), len(d))
		}, CompressLZ4},
		{"bzip2", small, func(t *testing.T, d []byte) []byte {
			return sizeAppend(compressCLI(t, d, "bzip2", "-9", "-c"), len(d))
		}, CompressBzip2},
		{"lzma", small, func(t *testing.T, d []byte) []byte {
			return sizeAppend(compressCLI(t, d, "lzma", "-9", "-c"), len(d))
		}, CompressLZMA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bz := filepath.Join(dir, "vmlinuz")
			if err := os.WriteFile(bz, fakeBzImage(tt.make(t, tt.elf), "6.1.0-test (x) #1"), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "vmlinux")
			if err := ExtractVmlinux(bz, out); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.elf) {
				t.Fatalf("extracted %d bytes differ from the %d-byte original", len(got), len(tt.elf))
			}
			data, _ := os.ReadFile(bz)
			if _, c, err := decompressKernel(data); err != nil || c != tt.want {
				t.Errorf("compression = %q, %v; want %q", c, err, tt.want)
			}
			v, err := KernelVersion(bz)
			if err != nil || v != "6.1.0-test (x) #1" {
				t.Errorf("KernelVersion = %q, %v", v, err)
			}
		})
	}
}

func TestExtractVmlinux_Bad(t *testing.T) {
	elfData := fakeELF(1 << 20)
	gz := compressCLI(t, elfData, "gzip", "-n", "-9")
	notELF := compressCLI(t, bytes.Repeat([]byte("not an elf "), 1000), "gzip", "-n")
	truncated := fakeBzImage(gz[:len(gz)/2], "v")
	binary.LittleEndian.PutUint32(truncated[hdrPayloadLength:], uint32(len(gz)/2))
	lzo := fakeBzImage(append([]byte{0x89, 'L', 'Z', 'O', 0, 1, 2, 3}, make([]byte, 100)...), "v")
	wrongSize := fakeBzImage(sizeAppend(compressCLI(t, elfData, "zstd", "-q", "-c"), len(elfData)+1), "v")

	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"not a bzImage", bytes.Repeat([]byte{1}, 4096), "no x86 boot header"},
		{"too short", []byte("MZ"), "too short"},
		{"unknown payload", fakeBzImage([]byte("garbage garbage garbage"), "v"), "unknown payload compression"},
		{"lzo unsupported", lzo, "lzo is not supported"},
		{"truncated gzip", truncated, "gzip payload"},
		{"not elf inside", fakeBzImage(notELF, "v"), "not an ELF"},
		{"appended size mismatch", wrongSize, "header says"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bz := filepath.Join(dir, "vmlinuz")
			if err := os.WriteFile(bz, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "vmlinux")
			err := ExtractVmlinux(bz, out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ExtractVmlinux error = %v, want containing %q", err, tt.wantErr)
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Error("failed extraction left an output file")
			}
		})
	}
}

// TestExtractVmlinux_Debian extracts the real Debian cloud kernel (LZ4)
// and checks the result is an x86-64 ELF executable with the PVH note
// Firecracker boots through.
func TestExtractVmlinux_Debian(t *testing.T) {
	bz := imagetest.DebianKernel(t)
	out := filepath.Join(t.TempDir(), FileVmlinux)
	start := time.Now()
	if err := ExtractVmlinux(bz, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("extracted %s in %v", filepath.Base(bz), time.Since(start))
	f, err := elf.Open(out)
	if err != nil {
		t.Fatalf("vmlinux is not ELF: %v", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Errorf("ELF machine %v type %v, want x86-64 executable", f.Machine, f.Type)
	}
	if !hasPVHNote(t, f) {
		t.Error("vmlinux has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")
	}
	v, err := KernelVersion(bz)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimPrefix(filepath.Base(bz), "vmlinuz-")
	if !strings.HasPrefix(v, base+" ") {
		t.Errorf("KernelVersion = %q, want it to start with %q", v, base)
	}
	data, _ := os.ReadFile(bz)
	if _, c, _ := decompressKernel(data); c != CompressLZ4 {
		t.Logf("note: Debian's kernel is now %s-compressed", c)
	}
}

// hasPVHNote looks for the Xen ELF note type 18 (PHYS32_ENTRY).
func hasPVHNote(t *testing.T, f *elf.File) bool {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			t.Fatal(err)
		}
		for len(data) >= 12 {
			nsz := binary.LittleEndian.Uint32(data)
			dsz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			name := data[12:min(len(data), 12+int(nsz))]
			if typ == 18 && bytes.HasPrefix(name, []byte("Xen")) {
				return true
			}
			adv := 12 + (int(nsz)+3)&^3 + (int(dsz)+3)&^3
			if adv > len(data) {
				break
			}
			data = data[adv:]
		}
	}
	return false
}

func BenchmarkExtractVmlinux(b *testing.B) {
	bz := imagetest.DebianKernel(b)
	out := filepath.Join(b.TempDir(), FileVmlinux)
	for b.Loop() {
		if err := ExtractVmlinux(bz, out); err != nil {
			b.Fatal(err)
		}
	}
}
