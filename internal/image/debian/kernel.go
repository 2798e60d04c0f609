package debian

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// bzImage setup header offsets (Documentation/arch/x86/boot.rst).
const (
	setupSectsOff    = 0x1f1
	headerMagicOff   = 0x202
	kernelVersionOff = 0x20e
	payloadOffsetOff = 0x248
	payloadLengthOff = 0x24c
)

// bzImageVersion reads the kernel release ("6.1.0-50-cloud-amd64") from
// the version string a bzImage's setup header points to.
func bzImageVersion(data []byte) (string, error) {
	if len(data) < payloadLengthOff+4 || string(data[headerMagicOff:headerMagicOff+4]) != "HdrS" {
		return "", errors.New("not a bzImage (no HdrS setup header)")
	}
	off := int(binary.LittleEndian.Uint16(data[kernelVersionOff:])) + 0x200
	if off >= len(data) {
		return "", errors.New("kernel version pointer out of range")
	}
	s := data[off:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	v, _, _ := strings.Cut(string(s), " ")
	if v == "" {
		return "", errors.New("empty kernel version")
	}
	return v, nil
}

// bzImagePayload decompresses the kernel payload of a bzImage into the
// uncompressed ELF vmlinux.
func bzImagePayload(data []byte) ([]byte, error) {
	if _, err := bzImageVersion(data); err != nil {
		return nil, err
	}
	sects := int(data[setupSectsOff])
	if sects == 0 {
		sects = 4
	}
	start := (sects+1)*512 + int(binary.LittleEndian.Uint32(data[payloadOffsetOff:]))
	end := start + int(binary.LittleEndian.Uint32(data[payloadLengthOff:]))
	if start >= len(data) || end > len(data) || end <= start {
		return nil, fmt.Errorf("payload %d..%d outside the %d-byte image", start, end, len(data))
	}
	p := data[start:end]
	var out []byte
	var err error
	switch {
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		out, err = lz4Legacy(p[4:])
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		var d *zstd.Decoder
		if d, err = zstd.NewReader(nil); err == nil {
			out, err = d.DecodeAll(p, nil)
			d.Close()
		}
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		var r io.Reader
		if r, err = xz.NewReader(bytes.NewReader(p)); err == nil {
			out, err = io.ReadAll(r)
		}
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		var r *gzip.Reader
		if r, err = gzip.NewReader(bytes.NewReader(p)); err == nil {
			r.Multistream(false)
			out, err = io.ReadAll(r)
		}
	default:
		return nil, fmt.Errorf("unknown payload compression (magic % x)", p[:min(6, len(p))])
	}
	if err != nil && !(len(out) > 4 && string(out[:4]) == "\x7fELF") {
		return nil, fmt.Errorf("decompress payload: %w", err)
	}
	if len(out) < 4 || string(out[:4]) != "\x7fELF" {
		return nil, errors.New("decompressed payload is not an ELF file")
	}
	return out, nil
}

// lz4Legacy decodes the LZ4 legacy frame the kernel uses: blocks of at
// most 8 MiB, each preceded by its compressed size. The kernel appends the
// uncompressed size after the last block, which ends the loop.
func lz4Legacy(p []byte) ([]byte, error) {
	const maxBlock = 8 << 20
	var out []byte
	buf := make([]byte, maxBlock)
	for len(p) >= 4 {
		n := int(binary.LittleEndian.Uint32(p))
		if n == 0 || n > lz4.CompressBlockBound(maxBlock) || n > len(p)-4 {
			break
		}
		m, err := lz4.UncompressBlock(p[4:4+n], buf)
		if err != nil {
			return out, fmt.Errorf("lz4 block: %w", err)
		}
		out = append(out, buf[:m]...)
		p = p[4+n:]
	}
	return out, nil
}

// writeVmlinux extracts the ELF kernel from the bzImage at src into dst.
func writeVmlinux(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("extract vmlinux: %w", err)
	}
	elf, err := bzImagePayload(data)
	if err != nil {
		return fmt.Errorf("extract vmlinux from %s: %w", src, err)
	}
	if err := os.WriteFile(dst, elf, 0o644); err != nil {
		return fmt.Errorf("extract vmlinux: %w", err)
	}
	return nil
}
