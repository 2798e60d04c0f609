// Package procstat samples a host process's CPU time and resident memory
// from /proc, for the VMM figures of `vm stats` and the dashboard: the
// VMM runs on the same host as whoever reads it. Standard library only.
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Sample is one reading of a process's CPU time and resident memory.
type Sample struct {
	// CPUTicks is user+system time in clock ticks (USER_HZ).
	CPUTicks uint64
	// RSSBytes is the resident set size.
	RSSBytes int64
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat;
// it is 100 on every Linux architecture banger runs on.
const clockTicks = 100

// Read samples pid from /proc/<pid>/stat (utime + stime) and
// /proc/<pid>/status (VmRSS).
func Read(pid int) (Sample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Sample{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Sample{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	ticks, err := parseStatTicks(stat)
	if err != nil {
		return Sample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		return Sample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return Sample{CPUTicks: ticks, RSSBytes: rss}, nil
}

// parseStatTicks returns utime+stime (fields 14 and 15) of a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStatTicks(stat []byte) (uint64, error) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse stat: %d fields after the command name", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stat utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stat stime: %w", err)
	}
	return ut + st, nil
}

// parseStatusRSS returns VmRSS of /proc/<pid>/status in bytes; 0 when the
// line is absent (kernel threads, zombies).
func parseStatusRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, nil
}

// CPUPercent is the CPU use between two samples of one process as a
// percentage of one CPU (a busy 2-vCPU guest can show 200).
func CPUPercent(prev, cur Sample, elapsed time.Duration) float64 {
	if elapsed <= 0 || cur.CPUTicks < prev.CPUTicks {
		return 0
	}
	secs := float64(cur.CPUTicks-prev.CPUTicks) / clockTicks
	return 100 * secs / elapsed.Seconds()
}
