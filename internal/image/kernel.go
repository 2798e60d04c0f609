package image

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"banger/internal/atomicfile"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// Offsets in the x86 boot protocol header (Documentation/arch/x86/boot.rst).
const (
	hdrSetupSects    = 0x1f1 // u8: setup sectors after the boot sector (0 means 4)
	hdrBootFlag      = 0x1fe // u16: 0xAA55
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206 // u16: boot protocol version
	hdrKernelVersion = 0x20e // u16: version string offset - 0x200
	hdrPayloadOffset = 0x248 // u32: payload offset from the protected-mode code (>= 2.08)
	hdrPayloadLength = 0x24c // u32
	hdrEnd           = 0x250
)

// Compression names a kernel payload format.
type Compression string

// The payload formats ExtractVmlinux understands.
const (
	CompressGzip  Compression = "gzip"
	CompressXZ    Compression = "xz"
	CompressZstd  Compression = "zstd"
	CompressLZ4   Compression = "lz4"
	CompressBzip2 Compression = "bzip2"
	CompressLZMA  Compression = "lzma"
	CompressLZO   Compression = "lzo"
)

// payloadMagics identify a compressed payload by its first bytes.
var payloadMagics = []struct {
	c     Compression
	magic []byte
}{
	{CompressGzip, []byte{0x1f, 0x8b, 0x08}},
	{CompressXZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{CompressZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{CompressLZ4, []byte{0x02, 0x21, 0x4c, 0x18}}, // legacy frame
	{CompressBzip2, []byte{'B', 'Z', 'h'}},
	{CompressLZMA, []byte{0x5d, 0x00, 0x00}},
	{CompressLZO, []byte{0x89, 'L', 'Z', 'O', 0x00}},
}

var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// maxVmlinux bounds the decompressed kernel (no real x86 vmlinux comes
// close; it stops a corrupt size field or a bomb).
const maxVmlinux = 1 << 30

// bzImage is a parsed x86 kernel image.
type bzImage struct {
	data    []byte
	version uint16 // boot protocol
	pmStart int    // start of the protected-mode code
}

func parseBzImage(data []byte) (*bzImage, error) {
	if len(data) < hdrEnd {
		return nil, fmt.Errorf("too short for a bzImage (%d bytes)", len(data))
	}
	if binary.LittleEndian.Uint16(data[hdrBootFlag:]) != 0xaa55 || !bytes.Equal(data[hdrMagic:hdrMagic+4], []byte("HdrS")) {
		return nil, errors.New("no x86 boot header (not a bzImage)")
	}
	setup := int(data[hdrSetupSects])
	if setup == 0 {
		setup = 4
	}
	return &bzImage{
		data:    data,
		version: binary.LittleEndian.Uint16(data[hdrVersion:]),
		pmStart: (setup + 1) * 512,
	}, nil
}

// payload returns the compressed kernel, from the header's payload
// fields when the boot protocol has them (>= 2.08), else by scanning the
// protected-mode code for a known magic.
func (b *bzImage) payload() (Compression, []byte, error) {
	if b.version >= 0x208 {
		off := b.pmStart + int(binary.LittleEndian.Uint32(b.data[hdrPayloadOffset:]))
		n := int(binary.LittleEndian.Uint32(b.data[hdrPayloadLength:]))
		if n > 0 && off >= b.pmStart && off+n <= len(b.data) {
			p := b.data[off : off+n]
			if c, ok := detectCompression(p); ok {
				return c, p, nil
			}
			return "", nil, fmt.Errorf("unknown payload compression (first bytes % x)", p[:min(8, len(p))])
		}
	}
	for i := b.pmStart; i < len(b.data); i++ {
		if c, ok := detectCompression(b.data[i:]); ok && c != CompressLZMA {
			return c, b.data[i:], nil
		}
	}
	return "", nil, errors.New("no compressed payload found")
}

func detectCompression(p []byte) (Compression, bool) {
	for _, m := range payloadMagics {
		if bytes.HasPrefix(p, m.magic) {
			return m.c, true
		}
	}
	return "", false
}

// KernelVersion returns the kernel_version string of an x86 bzImage
// ("6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP ...").
func KernelVersion(bzImagePath string) (string, error) {
	f, err := os.Open(bzImagePath)
	if err != nil {
		return "", fmt.Errorf("kernel version %s: %w", bzImagePath, err)
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("kernel version %s: %w", bzImagePath, err)
	}
	b, err := parseBzImage(head[:n])
	if err != nil {
		return "", fmt.Errorf("kernel version %s: %w", bzImagePath, err)
	}
	ptr := int(binary.LittleEndian.Uint16(b.data[hdrKernelVersion:]))
	if ptr == 0 || ptr+0x200 >= n {
		return "", fmt.Errorf("kernel version %s: header has no version string", bzImagePath)
	}
	s := b.data[ptr+0x200:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	if len(s) == 0 {
		return "", fmt.Errorf("kernel version %s: empty version string", bzImagePath)
	}
	return string(s), nil
}

// ExtractVmlinux writes the uncompressed ELF kernel held in the x86
// bzImage at bzImagePath to outPath (atomically: temp file and rename).
// It supports gzip, xz (including the x86 BCJ filter kernels use), zstd,
// lz4 (the kernel's legacy frame), bzip2 and lzma payloads.
func ExtractVmlinux(bzImagePath, outPath string) error {
	data, err := os.ReadFile(bzImagePath)
	if err != nil {
		return fmt.Errorf("extract vmlinux: %w", err)
	}
	elf, c, err := decompressKernel(data)
	if err != nil {
		return fmt.Errorf("extract vmlinux from %s: %w", bzImagePath, err)
	}
	if err := atomicfile.Write(outPath, elf, 0o644); err != nil {
		return fmt.Errorf("extract vmlinux from %s (%s): %w", bzImagePath, c, err)
	}
	return nil
}

// decompressKernel returns the ELF inside a bzImage and its compression.
func decompressKernel(data []byte) ([]byte, Compression, error) {
	b, err := parseBzImage(data)
	if err != nil {
		return nil, "", err
	}
	c, p, err := b.payload()
	if err != nil {
		return nil, "", err
	}
	// Every format but gzip has the uncompressed size appended (the
	// kernel's size_append); gzip's own trailer ends the same way.
	var want int64 = -1
	if len(p) >= 4 {
		want = int64(binary.LittleEndian.Uint32(p[len(p)-4:]))
	}
	stream := p
	if c != CompressGzip && b.version >= 0x208 && len(p) > 4 {
		stream = p[:len(p)-4] // some decoders (bzip2) read on past their stream
	}
	out, err := decompress(c, stream)
	if err != nil {
		return nil, c, fmt.Errorf("%s payload: %w", c, err)
	}
	if !bytes.HasPrefix(out, elfMagic) {
		return nil, c, fmt.Errorf("%s payload: decompressed data is not an ELF file", c)
	}
	if want >= 0 && int64(uint32(len(out))) != want && b.version >= 0x208 {
		return nil, c, fmt.Errorf("%s payload: decompressed %d bytes, header says %d", c, len(out), want)
	}
	return out, c, nil
}

// decompress inflates one payload. Trailing bytes after the compressed
// stream (the appended size) are ignored by each reader.
func decompress(c Compression, p []byte) ([]byte, error) {
	var r io.Reader
	switch c {
	case CompressGzip:
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		r = zr
	case CompressXZ:
		return decompressXZ(p)
	case CompressZstd:
		zr, err := zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderMaxMemory(maxVmlinux), zstd.IgnoreChecksum(false))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		// The appended size follows the frame; decode one frame only.
		return readLimited(zstdOneFrame{zr})
	case CompressLZ4:
		return decompressLZ4Legacy(p)
	case CompressBzip2:
		r = bzip2.NewReader(bytes.NewReader(p))
	case CompressLZMA:
		zr, err := lzma.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		r = zr
	default:
		return nil, fmt.Errorf("%s is not supported", c)
	}
	return readLimited(r)
}

// readLimited reads r to EOF, refusing more than maxVmlinux bytes.
func readLimited(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, maxVmlinux+1))
	if err != nil {
		return nil, err
	}
	if n > maxVmlinux {
		return nil, fmt.Errorf("decompressed kernel larger than %d bytes", maxVmlinux)
	}
	return buf.Bytes(), nil
}

// zstdOneFrame turns the "unknown magic" error zstd reports for the
// kernel's appended size after the frame into a clean end of stream.
type zstdOneFrame struct{ d *zstd.Decoder }

func (z zstdOneFrame) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil && errors.Is(err, zstd.ErrMagicMismatch) {
		return n, io.EOF
	}
	return n, err
}

// lz4LegacyBlock is the uncompressed size of every block of an LZ4
// legacy frame but the last.
const lz4LegacyBlock = 8 << 20

// decompressLZ4Legacy decodes the LZ4 legacy frame the kernel uses: the
// magic 0x184C2102, then blocks each preceded by its compressed size
// (little-endian u32) and holding up to 8 MiB. It ends at the end of the
// data, at a size that cannot be a block (the kernel's appended
// uncompressed size) or at a repeated magic (concatenated frames).
func decompressLZ4Legacy(p []byte) ([]byte, error) {
	const magic = 0x184c2102
	if len(p) < 4 || binary.LittleEndian.Uint32(p) != magic {
		return nil, errors.New("no lz4 legacy magic")
	}
	p = p[4:]
	var out []byte
	buf := make([]byte, lz4LegacyBlock)
	for len(p) >= 4 {
		n := binary.LittleEndian.Uint32(p)
		if n == magic {
			p = p[4:]
			continue
		}
		if int64(n) > int64(len(p)-4) || n > uint32(lz4.CompressBlockBound(lz4LegacyBlock)) {
			break // the appended size (or trailing bytes), not a block
		}
		m, err := lz4.UncompressBlock(p[4:4+n], buf)
		if err != nil {
			return nil, fmt.Errorf("block at %d: %w", len(out), err)
		}
		out = append(out, buf[:m]...)
		if len(out) > maxVmlinux {
			return nil, fmt.Errorf("decompressed kernel larger than %d bytes", maxVmlinux)
		}
		p = p[4+n:]
	}
	if len(out) == 0 {
		return nil, errors.New("no lz4 blocks")
	}
	return out, nil
}

// decompressXZ decodes an xz stream. The kernel's xz payloads carry the
// x86 BCJ filter before LZMA2, which the xz library does not implement;
// those go through decodeXZBCJ.
func decompressXZ(p []byte) ([]byte, error) {
	zr, err := xz.NewReader(bytes.NewReader(p))
	if err == nil {
		zr.SingleStream = true
		out, rerr := readLimited(zr)
		if rerr == nil {
			return out, nil
		}
		err = rerr
	}
	out, berr := decodeXZBCJ(p)
	if berr == nil {
		return out, nil
	}
	return nil, fmt.Errorf("%w (with the BCJ decoder: %v)", err, berr)
}

// xz filter ids (xz file format, section 5.3).
const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

// decodeXZBCJ decodes the first block of an xz stream whose filter chain
// is x86 BCJ + LZMA2, as the kernel's xz_wrap produces. It checks the
// stream and block header CRCs; the payload itself is checked by the
// caller (appended size, ELF magic).
func decodeXZBCJ(p []byte) ([]byte, error) {
	if len(p) < 12+8 || !bytes.HasPrefix(p, payloadMagics[1].magic) {
		return nil, errors.New("no xz stream header")
	}
	hdr := p[12:]
	hsize := (int(hdr[0]) + 1) * 4
	if hdr[0] == 0 || hsize > len(hdr) {
		return nil, errors.New("bad xz block header size")
	}
	if crc32.ChecksumIEEE(hdr[:hsize-4]) != binary.LittleEndian.Uint32(hdr[hsize-4:]) {
		return nil, errors.New("xz block header crc mismatch")
	}
	br := bytes.NewReader(hdr[1 : hsize-4])
	flags, _ := br.ReadByte()
	nfilters := int(flags&3) + 1
	if flags&0x40 != 0 {
		if _, err := binary.ReadUvarint(br); err != nil {
			return nil, err
		}
	}
	if flags&0x80 != 0 {
		if _, err := binary.ReadUvarint(br); err != nil {
			return nil, err
		}
	}
	var bcj bool
	var bcjStart uint32
	var dictCap int64 = -1
	for i := 0; i < nfilters; i++ {
		id, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		psize, err := binary.ReadUvarint(br)
		if err != nil || psize > 16 {
			return nil, errors.New("bad xz filter properties")
		}
		props := make([]byte, psize)
		if _, err := io.ReadFull(br, props); err != nil {
			return nil, err
		}
		switch {
		case id == xzFilterX86 && i < nfilters-1:
			bcj = true
			if psize == 4 {
				bcjStart = binary.LittleEndian.Uint32(props)
			}
		case id == xzFilterLZMA2 && i == nfilters-1 && psize == 1:
			dictCap, err = lzma.DecodeDictCap(props[0])
			if err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unsupported xz filter %#x", id)
		}
	}
	if dictCap < 0 {
		return nil, errors.New("xz block without LZMA2")
	}
	cfg := lzma.Reader2Config{DictCap: int(dictCap)}
	r, err := cfg.NewReader2(bufio.NewReader(bytes.NewReader(hdr[hsize:])))
	if err != nil {
		return nil, err
	}
	out, err := readLimited(r)
	if err != nil {
		return nil, err
	}
	if bcj {
		bcjX86Decode(out, bcjStart)
	}
	return out, nil
}

// bcjX86Decode undoes the x86 branch/call/jump filter in place over a
// whole buffer: relative CALL/JMP targets (E8/E9) were made absolute by
// the encoder; make them relative again. A port of the decoder in
// xz-embedded (public domain).
func bcjX86Decode(buf []byte, startPos uint32) {
	maskAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskBit := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0x00 || b == 0xff }
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << uint(d-1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskBit[prevMask])]
				if !maskAllowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if msb(buf[i+4]) {
			src := binary.LittleEndian.Uint32(buf[i+1:])
			var dest uint32
			for {
				dest = src - (startPos + uint32(i) + 5)
				if prevMask == 0 {
					break
				}
				j := maskBit[prevMask] * 8
				b := byte(dest >> (24 - j))
				if !msb(b) {
					break
				}
				src = dest ^ (1<<(32-j) - 1)
			}
			dest &= 0x01ffffff
			dest |= 0 - (dest & 0x01000000)
			binary.LittleEndian.PutUint32(buf[i+1:], dest)
			i += 4
		} else {
			prevMask = prevMask<<1 | 1
		}
	}
}
