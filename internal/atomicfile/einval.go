package atomicfile

import (
	"errors"
	"syscall"
)

// isEINVAL reports a directory fsync the filesystem does not support.
func isEINVAL(err error) bool { return errors.Is(err, syscall.EINVAL) }
