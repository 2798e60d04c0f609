package initramfs

import (
	"fmt"
	"io"
	"path"
)

// writer writes a cpio archive in the "newc" format the kernel unpacks
// (Documentation/driver-api/early-userspace/buffer-format.rst): per entry
// a 110-byte ASCII header of thirteen 8-digit hex fields, the name with
// its NUL, padding to 4 bytes, the data, padding to 4 bytes; the archive
// ends with an entry named TRAILER!!!. Written here because the standard
// library has none and the format is this short; the first error sticks.
type writer struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func newWriter(w io.Writer) *writer {
	return &writer{w: w, ino: 1, dirs: map[string]bool{".": true, "": true}}
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

func (a *writer) entry(name string, mode uint32, data []byte, major, minor uint32) {
	if a.err != nil {
		return
	}
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, major, minor, len(name)+1, 0)
	a.ino++
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	if _, err := a.w.Write(buf); err != nil {
		a.err = err
		return
	}
	if len(data) > 0 {
		if _, err := a.w.Write(data); err != nil {
			a.err = err
			return
		}
		if n := len(data) % 4; n != 0 {
			if _, err := a.w.Write(make([]byte, 4-n)); err != nil {
				a.err = err
			}
		}
	}
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// dir adds directory name (mode 0755), once.
func (a *writer) dir(name string) {
	if a.dirs[name] {
		return
	}
	a.dirs[name] = true
	a.entry(name, modeDir|0o755, nil, 0, 0)
}

// dirsFor adds the directories above name that are not in yet, parents
// first.
func (a *writer) dirsFor(name string) {
	d := path.Dir(name)
	if a.dirs[d] {
		return
	}
	a.dirsFor(d)
	a.dir(d)
}

func (a *writer) file(name string, perm uint32, data []byte) {
	a.entry(name, modeFile|perm, data, 0, 0)
}

func (a *writer) charDev(name string, perm, major, minor uint32) {
	a.entry(name, modeChar|perm, nil, major, minor)
}

// close writes the trailer and returns the first error.
func (a *writer) close() error {
	a.entry("TRAILER!!!", 0, nil, 0, 0)
	return a.err
}
