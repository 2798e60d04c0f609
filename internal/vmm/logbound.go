package vmm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// DefaultConsoleLogMax is the default bound of a VM's console.log. The
// guest writes that file (through the VMM's serial port) as fast as it
// likes; BoundLog keeps it, and the one rotated copy beside it, under this
// size.
const DefaultConsoleLogMax = 4 << 20

// RotatedSuffix names the one older copy BoundLog keeps ("console.log.1").
const RotatedSuffix = ".1"

// BoundLog keeps a log that a VMM appends to (opened O_APPEND, as Detach
// and QEMU's append=on chardev do) under max bytes: when the file is
// larger, its last max bytes are copied to path+RotatedSuffix (replaced
// atomically) and the file is truncated in place, so the VMM's descriptor
// goes on writing at the new end. Bytes written between the copy and the
// truncation are lost; that is the price of rotating a file another
// process holds open. It reports whether it rotated. A missing file is not
// an error.
func BoundLog(path string, max int64) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bound log %s: %w", path, err)
	}
	if fi.Size() <= max {
		return false, nil
	}
	src, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("bound log %s: %w", path, err)
	}
	defer src.Close()
	if _, err := src.Seek(fi.Size()-max, io.SeekStart); err != nil {
		return false, fmt.Errorf("bound log %s: %w", path, err)
	}
	tmp := path + RotatedSuffix + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return false, fmt.Errorf("bound log %s: %w", path, err)
	}
	_, cerr := io.CopyN(dst, src, max)
	if errors.Is(cerr, io.EOF) {
		cerr = nil
	}
	if err := errors.Join(cerr, dst.Close()); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("bound log %s: %w", path, err)
	}
	if err := os.Rename(tmp, path+RotatedSuffix); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("bound log %s: %w", path, err)
	}
	if err := os.Truncate(path, 0); err != nil {
		return false, fmt.Errorf("bound log %s: %w", path, err)
	}
	return true, nil
}
