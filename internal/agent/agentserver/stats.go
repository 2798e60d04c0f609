package agentserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	st, err := ReadStats("/proc", diskUse)
	if err != nil {
		writeError(w, http.StatusInternalServerError, agent.CodeInternal, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// diskUse measures the filesystem holding path.
func diskUse(path string) (agent.DiskUse, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return agent.DiskUse{}, err
	}
	bs := uint64(fs.Bsize)
	return agent.DiskUse{Size: fs.Blocks * bs, Used: (fs.Blocks - fs.Bfree) * bs}, nil
}

// ReadStats reads the guest's resources from the proc filesystem at proc
// and measures / (the overlay's writable layer) and /root with du.
func ReadStats(proc string, du func(string) (agent.DiskUse, error)) (agent.Stats, error) {
	var st agent.Stats
	var errs []error
	if b, err := os.ReadFile(filepath.Join(proc, "stat")); err == nil {
		st.CPUBusy, st.CPUTotal, err = parseCPU(b)
		errs = append(errs, err)
	} else {
		errs = append(errs, err)
	}
	if b, err := os.ReadFile(filepath.Join(proc, "meminfo")); err == nil {
		st.MemTotal, st.MemAvailable = parseMeminfo(b)
	} else {
		errs = append(errs, err)
	}
	if b, err := os.ReadFile(filepath.Join(proc, "loadavg")); err == nil {
		f := strings.Fields(string(b))
		for i := 0; i < 3 && i < len(f); i++ {
			st.Load[i], _ = strconv.ParseFloat(f[i], 64)
		}
	} else {
		errs = append(errs, err)
	}
	if b, err := os.ReadFile(filepath.Join(proc, "net", "dev")); err == nil {
		st.RxBytes, st.TxBytes = parseNetDev(b)
	} else {
		errs = append(errs, err)
	}
	var err error
	if st.Overlay, err = du("/"); err != nil {
		errs = append(errs, fmt.Errorf("statfs /: %w", err))
	}
	if st.Root, err = du("/root"); err != nil {
		errs = append(errs, fmt.Errorf("statfs /root: %w", err))
	}
	return st, errors.Join(errs...)
}

// parseCPU reads the aggregate "cpu" line of /proc/stat: user nice system
// idle iowait irq softirq steal ...; busy is all but idle and iowait.
func parseCPU(b []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("parse /proc/stat: no cpu line")
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		// guest and guest_nice (fields 9 and 10) are inside user and nice.
		if i >= 8 {
			break
		}
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total, nil
}

// parseMeminfo returns MemTotal and MemAvailable in bytes.
func parseMeminfo(b []byte) (total, avail uint64) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			avail = v * 1024
		}
	}
	return total, avail
}

// parseNetDev sums the received and sent bytes of every interface but lo.
func parseNetDev(b []byte) (rx, tx uint64) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			continue
		}
		r, err1 := strconv.ParseUint(f[0], 10, 64)
		t, err2 := strconv.ParseUint(f[8], 10, 64)
		if err1 == nil && err2 == nil {
			rx += r
			tx += t
		}
	}
	return rx, tx
}
