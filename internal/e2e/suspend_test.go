package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkPauseSuspend runs on a booted VM NAME: a counter session must keep
// counting across pause/resume and across suspend/start, the guest clock
// must be right after each, a suspended VM holds no VMM, a restore is not
// a reboot (same boot id), and a corrupt state file is refused with
// nothing started, after which --cold boots from the disks.
func (e *env) checkPauseSuspend(t *testing.T, name string) {
	e.must(e.banger("", "vm", "session", "start", name, "--name", "counter", "--",
		"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /root/count; sleep 0.2; done"))
	first := e.waitCount(t, name, 0)
	bootID := e.bootID(t, name)

	t.Run("pause and resume", func(t *testing.T) {
		e.must(e.banger("", "vm", "pause", name))
		if st := e.vm(name)["state"]; st != "paused" {
			t.Fatalf("state after pause = %v", st)
		}
		r := e.banger("", "vm", "exec", name, "--", "true")
		if r.code == 0 || !strings.Contains(r.stderr, "banger vm resume "+name) {
			t.Fatalf("exec on a paused vm: code %d, stderr %q; want a refusal naming vm resume", r.code, r.stderr)
		}
		// The time under test, not synchronisation: the guest's clock
		// stands still while paused and must be stepped on resume.
		time.Sleep(5 * time.Second)
		r = e.must(e.banger("", "vm", "resume", name))
		if !strings.Contains(r.stderr, "clock stepped") {
			t.Errorf("resume did not report the clock step:\n%s", r.stderr)
		}
		if st := e.vm(name)["state"]; st != "running" {
			t.Fatalf("state after resume = %v", st)
		}
		e.checkClock(t, name)
		e.waitCount(t, name, first)
		e.checkSessionRunning(t, name)
	})

	t.Run("suspend and start restore", func(t *testing.T) {
		v := e.vm(name)
		pid := int(v["pid"].(float64))
		dir, _ := v["dir"].(string)
		t.Logf("vmm rss before suspend: %s", rss(pid))
		before := e.waitCount(t, name, 0)
		start := time.Now()
		r := e.must(e.banger("", "vm", "suspend", name))
		t.Logf("suspend took %s:\n%s", time.Since(start).Round(time.Millisecond), r.stderr)
		if processRunning(pid) {
			t.Fatalf("vmm pid %d still runs after suspend", pid)
		}
		v = e.vm(name)
		if v["state"] != "suspended" || v["pid"] != nil {
			t.Fatalf("after suspend: state %v pid %v", v["state"], v["pid"])
		}
		if _, err := os.Stat(filepath.Join(dir, "suspend", "state.json")); err != nil {
			t.Fatalf("no saved state: %v", err)
		}
		if r := e.banger("", "vm", "exec", name, "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "banger vm resume "+name) {
			t.Fatalf("exec on a suspended vm: code %d, stderr %q", r.code, r.stderr)
		}
		time.Sleep(5 * time.Second) // the time under test, as above
		start = time.Now()
		r = e.must(e.banger("", "vm", "start", name))
		t.Logf("restore took %s:\n%s", time.Since(start).Round(time.Millisecond), r.stderr)
		if !strings.Contains(r.stderr, "restore") || strings.Contains(r.stderr, "config drive") {
			t.Errorf("start of a suspended vm did not take the restore path:\n%s", r.stderr)
		}
		if got := e.bootID(t, name); got != bootID {
			t.Fatalf("boot id %s after restore, was %s: the guest rebooted", got, bootID)
		}
		e.checkClock(t, name)
		if n := e.waitCount(t, name, before); n < before {
			t.Fatalf("counter went back from %d to %d", before, n)
		}
		e.checkSessionRunning(t, name)
		if _, err := os.Stat(filepath.Join(dir, "suspend")); !os.IsNotExist(err) {
			t.Errorf("saved state left after restore: %v", err)
		}
		t.Logf("vmm rss after restore: %s", rss(int(e.vm(name)["pid"].(float64))))
	})

	t.Run("corrupt state is refused, --cold boots", func(t *testing.T) {
		dir, _ := e.vm(name)["dir"].(string)
		e.must(e.banger("", "vm", "suspend", name))
		p := filepath.Join(dir, "suspend", "vmstate")
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		if _, err := f.WriteAt([]byte("banger"), st.Size()/2); err != nil {
			t.Fatal(err)
		}
		f.Close()
		r := e.banger("", "vm", "start", name)
		if r.code == 0 || !strings.Contains(r.stderr, "corrupt") || !strings.Contains(r.stderr, "--cold") {
			t.Fatalf("start with a corrupt state: code %d\n%s", r.code, r.stderr)
		}
		if pids := e.vmmPIDs(); len(pids) != 0 {
			t.Fatalf("a refused restore left vmm processes %v", pids)
		}
		if st := e.vm(name)["state"]; st != "suspended" {
			t.Fatalf("state after a refused restore = %v, want suspended", st)
		}
		e.must(e.banger("", "vm", "start", "--cold", name))
		if got := e.bootID(t, name); got == bootID {
			t.Fatal("--cold did not boot the guest afresh")
		}
		if _, err := os.Stat(filepath.Join(dir, "suspend")); !os.IsNotExist(err) {
			t.Errorf("--cold kept the saved state: %v", err)
		}
	})
}

// waitCount polls the counter file until it exceeds above, and returns it.
func (e *env) waitCount(t *testing.T, name string, above int) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := e.banger("", "vm", "exec", name, "--", "cat", "/root/count")
		n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
		if r.code == 0 && err == nil && n > above {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter never went above %d (last %q, %v)", above, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) bootID(t *testing.T, name string) string {
	t.Helper()
	var h struct {
		BootID string `json:"boot_id"`
	}
	r := e.must(e.banger("", "vm", "health", name, "--json"))
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || h.BootID == "" {
		t.Fatalf("vm health --json: %v: %s", err, r.stdout)
	}
	return h.BootID
}

// checkClock fails when the guest clock is more than 3 s from the host's
// (an exec under TCG takes well under that).
func (e *env) checkClock(t *testing.T, name string) {
	t.Helper()
	host := float64(time.Now().UnixNano()) / 1e9
	r := e.must(e.banger("", "vm", "exec", name, "--", "date", "+%s.%N"))
	guest, err := strconv.ParseFloat(strings.TrimSpace(r.stdout), 64)
	if err != nil {
		t.Fatalf("guest date: %v: %q", err, r.stdout)
	}
	if d := guest - host; math.Abs(d) > 3 {
		t.Fatalf("guest clock is %.1f s off the host's", d)
	}
}

// checkClockWithin fails when the guest clock, read by `vm exec date`,
// is more than tol before the host's clock when the exec began or after
// it when the exec ended.
func (e *env) checkClockWithin(t *testing.T, name string, tol time.Duration) {
	t.Helper()
	before := time.Now()
	r := e.must(e.banger("", "vm", "exec", name, "--", "date", "+%s.%N"))
	after := time.Now()
	secs, err := strconv.ParseFloat(strings.TrimSpace(r.stdout), 64)
	if err != nil {
		t.Fatalf("guest date: %v: %q", err, r.stdout)
	}
	guest := time.Unix(0, int64(secs*1e9))
	if guest.Before(before.Add(-tol)) || guest.After(after.Add(tol)) {
		t.Fatalf("guest clock %s is outside the exec's host interval [%s, %s] ± %s",
			guest.Format("15:04:05.000"), before.Format("15:04:05.000"), after.Format("15:04:05.000"), tol)
	}
}

func (e *env) checkSessionRunning(t *testing.T, name string) {
	t.Helper()
	r := e.must(e.banger("", "vm", "session", "list", name, "--json"))
	var ss []struct {
		Name, State string
	}
	if err := json.Unmarshal([]byte(r.stdout), &ss); err != nil {
		t.Fatalf("session list --json: %v: %s", err, r.stdout)
	}
	for _, s := range ss {
		if s.Name == "counter" && s.State == "running" {
			return
		}
	}
	t.Fatalf("counter session not running: %s", r.stdout)
}

// rss is the VmRSS line of pid's status, for the log.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}
