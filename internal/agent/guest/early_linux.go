package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guestcontract"
)

// The early agent. On an image that boots systemd, /init applies the
// identity itself and starts the serving agent just before it executes
// systemd, so the agent answers while systemd is still loading units
// (about two seconds under emulation) rather than after. systemd starts
// with the identity in place: the hostname it reads, the host keys sshd
// will serve. When systemd later starts banger-agent.service, the unit
// adopts the running agent: its ExecStart moves the early agent into the
// unit's cgroup, names it the main PID and reports ready, so systemd
// supervises, stops and restarts it as if it had started it. Without an
// early agent (or when adoption fails) the unit serves as it always did.

// EarlyPIDFile names the early agent for the unit that adopts it. /run is
// the initramfs's tmpfs, moved into the booted system: nothing survives a
// reboot. A variable for tests.
var EarlyPIDFile = "/run/banger/agent-early.pid"

// earlyIdentityFD is the descriptor on which the early agent reads what
// /init applied.
const earlyIdentityFD = 3

// earlyIdentity is what /init hands the early agent through a pipe: what
// serve keeps of Boot's result. The token never touches a disk.
type earlyIdentity struct {
	Token    string   `json:"token"`
	Env      []string `json:"env,omitempty"`
	Hostname string   `json:"hostname"`
	VMID     string   `json:"vm_id"`
	Err      string   `json:"error,omitempty"`
}

// startEarlyAgent runs in /init inside the new root, before systemd: it
// applies the identity (Boot) and starts `AgentPath serve
// --identity-fd=3`, writing what it applied to the agent's descriptor 3
// and the agent's PID to EarlyPIDFile. A failure is reported on the
// console and leaves the unit to do everything, as before.
func startEarlyAgent() {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	id, err := Boot(ctx, BootConfig{Sys: LinuxSystem{}})
	if id.Token == "" {
		say("identity: %v; the agent starts with systemd", err)
		return
	}
	st := earlyIdentity{Token: id.Token, Env: id.Env, Hostname: id.Hostname, VMID: id.VMID}
	if err != nil {
		say("identity: %v", err)
		st.Err = err.Error()
	}
	pid, err := spawnEarly(st)
	if err != nil {
		say("start the agent early: %v; it starts with systemd", err)
		return
	}
	say("agent started (pid %d), identity applied for %s", pid, id.Hostname)
}

// spawnEarly starts the early agent with st on its descriptor 3 and
// records its PID.
func spawnEarly(st earlyIdentity) (int, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer w.Close()
	cmd := exec.Command(guestcontract.AgentPath, "serve", "--identity-fd="+strconv.Itoa(earlyIdentityFD))
	cmd.ExtraFiles = []*os.File{r} // descriptor 3
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	// systemd, which this process becomes, reaps the agent when it ends.
	_ = cmd.Process.Release()
	if _, err := w.Write(b); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return 0, fmt.Errorf("hand over the identity: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(EarlyPIDFile), 0o755); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return 0, err
	}
	if err := os.WriteFile(EarlyPIDFile, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return 0, err
	}
	return pid, nil
}

// readEarlyIdentity reads what /init applied from descriptor fd (bounded:
// an identity is a few kilobytes).
func readEarlyIdentity(fd int) (earlyIdentity, error) {
	f := os.NewFile(uintptr(fd), "identity")
	if f == nil {
		return earlyIdentity{}, fmt.Errorf("descriptor %d is not open", fd)
	}
	defer f.Close()
	var st earlyIdentity
	if err := json.NewDecoder(io.LimitReader(f, 4<<20)).Decode(&st); err != nil {
		return earlyIdentity{}, fmt.Errorf("read the identity from descriptor %d: %w", fd, err)
	}
	return st, nil
}

// adoptEarlyAgent runs as the unit's ExecStart: when an early agent is
// serving, it moves it into this unit's cgroup, tells systemd it is the
// main PID and ready, and asks it to log to the journal. It returns true
// once systemd was told (the caller then exits); false with no error when
// there is none to adopt. Only when systemd could not be told does it end
// the early agent, so the caller serves in its place on a free port: a
// running agent is never ended for a step that does not need it (a
// snapshot taken mid-adoption restores into a guest whose clocks moved,
// and a barrier timing out there must not take the agent down).
func adoptEarlyAgent(log *slog.Logger) (bool, error) {
	b, err := os.ReadFile(EarlyPIDFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	// Adopted once: a restarted unit serves itself.
	_ = os.Remove(EarlyPIDFile)
	if err != nil {
		return false, fmt.Errorf("adopt the early agent: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return false, fmt.Errorf("adopt the early agent: bad pid file %q", b)
	}
	if !isEarlyAgent(pid) {
		return false, fmt.Errorf("adopt the early agent: pid %d is gone", pid)
	}
	// Into this unit's cgroup, so the journal files its lines under the
	// unit and a stop ends whatever it started. Without it systemd still
	// tracks the main PID (it accepts MAINPID= from root).
	if cg, err := ownCgroup(); err != nil {
		log.Warn("early agent stays in its cgroup", "err", err)
	} else if err := os.WriteFile(filepath.Join("/sys/fs/cgroup", cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		log.Warn("early agent stays in its cgroup", "cgroup", cg, "err", err)
	}
	if err := Notify(fmt.Sprintf("MAINPID=%d\nREADY=1", pid)); err != nil {
		endProcess(pid)
		return false, fmt.Errorf("adopt the early agent (pid %d, now ended): %w", pid, err)
	}
	// systemd must have read the message before this process exits, or
	// it could see the main process end before it was ready. It reads
	// notifications before child exits in any case, so a barrier that
	// fails is worth a warning, not the agent.
	if err := notifyBarrier(5 * time.Second); err != nil {
		log.Warn("adopting the early agent", "err", err)
	}
	// Only once the agent catches it: SIGUSR1's default action ends a
	// process, and a process that is still starting has no handler.
	if catches(pid, unix.SIGUSR1) {
		_ = unix.Kill(pid, unix.SIGUSR1)
	}
	log.Info("adopted the agent /init started", "pid", pid)
	return true, nil
}

// isEarlyAgent reports whether pid runs the early agent (a zombie's
// command line is empty).
func isEarlyAgent(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(args) >= 3 && args[0] == guestcontract.AgentPath && args[1] == "serve" &&
		args[2] == "--identity-fd="+strconv.Itoa(earlyIdentityFD)
}

// catches reports whether pid has a handler for sig (SigCgt in
// /proc/PID/status).
func catches(pid int, sig unix.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// endProcess sends pid SIGTERM and waits (bounded) until it is gone,
// then SIGKILLs it.
func endProcess(pid int) {
	_ = unix.Kill(pid, unix.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for isEarlyAgent(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling: pid is not our child
	}
	_ = unix.Kill(pid, unix.SIGKILL)
}

// ownCgroup returns this process's cgroup v2 path (from /proc/self/cgroup).
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(p, "/") && !strings.Contains(p, "..") {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// notifyBarrier is sd_notify_barrier: it sends systemd BARRIER=1 with a
// pipe's write end and waits until systemd closes it, which it does once
// it has processed every earlier message.
func notifyBarrier(timeout time.Duration) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	err = sendNotify("BARRIER=1", []int{int(w.Fd())})
	w.Close()
	if err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	_ = r.SetReadDeadline(time.Now().Add(timeout))
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return fmt.Errorf("sd_notify barrier: systemd did not answer: %v", err)
	}
	return nil
}

// journalStdout is journald's stream socket (what systemd connects a
// unit's stdout to). A variable for tests.
var journalStdout = "/run/systemd/journal/stdout"

// logOutput is the agent's log destination. The early agent writes to
// the console until the unit adopts it, then (on SIGUSR1) to a journal
// stream of its own, opened at the next line: journald files it under the
// unit whose cgroup the agent is in. Hand-written because the stream
// protocol is a seven-line header (sd_journal_stream_fd) and no module
// here speaks it.
type logOutput struct {
	mu      sync.Mutex
	console io.Writer
	journal net.Conn
	want    bool
}

// Write writes p to the journal stream when it is wanted and can be
// opened, else to the console.
func (o *logOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.want && o.journal == nil {
		if c, err := net.Dial("unix", journalStdout); err == nil {
			// identifier, unit, priority, level prefix, syslog, kmsg, console
			if _, err := io.WriteString(c, "banger-agent\n\n6\n0\n0\n0\n0\n"); err == nil {
				o.journal = c
			} else {
				c.Close()
			}
		}
	}
	if o.journal != nil {
		if n, err := o.journal.Write(p); err == nil {
			return n, nil
		}
		o.journal.Close()
		o.journal = nil
	}
	return o.console.Write(p)
}

// toJournal makes later lines go to the journal.
func (o *logOutput) toJournal() {
	o.mu.Lock()
	o.want = true
	o.mu.Unlock()
}
