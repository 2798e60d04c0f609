package agentserver

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

// handleThaw steps the clock and reseeds the random pool of a guest that
// runs again after a pause, suspend or snapshot restore (POST /thaw).
func (s *Server) handleThaw(w http.ResponseWriter, r *http.Request) {
	var req agent.Thaw
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("decode thaw: %w", err))
		return
	}
	if req.Time.IsZero() {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("thaw: no time"))
		return
	}
	if len(req.Entropy) > agent.MaxThawEntropy {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("thaw: %d bytes of entropy, at most %d", len(req.Entropy), agent.MaxThawEntropy))
		return
	}
	if len(req.Entropy) > 0 {
		add := s.AddEntropy
		if add == nil {
			add = addEntropy
		}
		if err := add(req.Entropy); err != nil {
			writeError(w, http.StatusInternalServerError, agent.CodeInternal, fmt.Errorf("reseed random pool: %w", err))
			return
		}
	}
	step := time.Until(req.Time)
	set := s.SetClock
	if set == nil {
		set = setClock
	}
	if err := set(req.Time); err != nil {
		writeError(w, http.StatusInternalServerError, agent.CodeInternal, fmt.Errorf("set clock: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, agent.ThawResult{ClockStep: step})
}

func setClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// addEntropy credits b to the kernel's pool with RNDADDENTROPY (a plain
// write to /dev/urandom would mix it in without crediting it), then forces
// the CRNG to reseed from the pool (RNDRESEEDCRNG): otherwise two guests
// restored from one snapshot keep producing the same random bytes until
// the next scheduled reseed, up to a minute later. RNDADDENTROPY takes
// struct rand_pool_info: entropy bits, buffer size, buffer.
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info := make([]byte, 8+len(b))
	binary.NativeEndian.PutUint32(info[0:], uint32(len(b)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(b)))
	copy(info[8:], b)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0])))
	if errno != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", errno)
	}
	return nil
}
