package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"banger/internal/api"
	"banger/internal/stream"
	"banger/internal/wait"
)

// TestLifecycle boots real VMs under QEMU inside a private namespace and
// checks the promises of `vm run`, exec, ssh, crash recovery and cleanup.
// The subtests share one daemon and run in order.
func TestLifecycle(t *testing.T) {
	e := newEnv(t, func(s string) string {
		return strings.Replace(s, `warm_templates = "manual"`, `warm_templates = "auto"`, 1)
	})
	e.ensureImage()

	t.Run("run prints the hostname", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "run", "--name", "t1", "--", "cat", "/etc/hostname"))
		if strings.TrimSpace(r.stdout) != "t1" {
			t.Fatalf("stdout = %q, want t1\nstderr: %s", r.stdout, r.stderr)
		}
		// The first cold create of the shape made the image's warm
		// template from t1 (warm_templates = "auto"), and t1 ran on.
		if !strings.Contains(r.stderr, "✓ template") || !strings.Contains(r.stderr, "made the warm template") {
			t.Errorf("the first create made no warm template:\n%s", r.stderr)
		}
		if !strings.Contains(r.stderr, "spec: 2 vcpu · 1024 MiB · 2G disk") {
			t.Errorf("no spec line in stderr:\n%s", r.stderr)
		}
	})

	t.Run("exec exit codes and streams", func(t *testing.T) {
		r := e.banger("", "vm", "exec", "t1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
		if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
			t.Fatalf("got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
		r = e.must(e.banger("", "vm", "exec", "t1", "--", "sh", "-c", "head -c 10485760 /dev/zero | tr '\\0' x"))
		if len(r.stdout) != 10<<20 || strings.Trim(r.stdout, "x") != "" {
			t.Fatalf("10 MiB stdout: got %d bytes", len(r.stdout))
		}
		in := strings.Repeat("banger\n", 5000)
		r = e.must(e.banger(in, "vm", "exec", "t1", "--", "wc", "-c"))
		if strings.TrimSpace(r.stdout) != fmt.Sprint(len(in)) {
			t.Fatalf("wc -c of stdin = %q, want %d", r.stdout, len(in))
		}
	})

	t.Run("pty exec sees the host's window size", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := &api.Client{Socket: e.socket}
		conn, err := c.Exec(ctx, "t1", api.ExecRequest{Argv: []string{"stty", "size"}, TTY: true, Cols: 123, Rows: 45})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sc := stream.NewConn(conn)
		if err := sc.WriteFrame(stream.StdinEOF, nil); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		code := int32(-1)
		_ = sc.Demux(map[stream.Kind]func(stream.Frame) error{
			stream.Stdout: stream.Sink{W: &out}.Deliver,
			stream.Exit: func(f stream.Frame) error {
				code, _, _ = stream.DecodeExit(f.Data)
				return io.EOF
			},
		})
		if code != 0 || strings.TrimSpace(out.String()) != "45 123" {
			t.Fatalf("stty size under a pty = %q (exit %d), want \"45 123\"", out.String(), code)
		}
	})

	t.Run("ssh with strict host keys", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "ssh", "t1", "--", "hostname"))
		if strings.TrimSpace(r.stdout) != "t1" {
			t.Fatalf("ssh hostname = %q\nstderr: %s", r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "banger vm stop t1") {
			t.Errorf("no still-running reminder after ssh:\n%s", r.stderr)
		}
	})

	t.Run("the agent /init started is adopted by its unit", func(t *testing.T) {
		// banger's initramfs applied the identity and started the agent
		// before systemd; banger-agent.service made it its main process.
		r := e.must(e.banger("", "vm", "exec", "t1", "--", "sh", "-c",
			`pid=$(systemctl show -p MainPID --value banger-agent); tr '\0' ' ' < /proc/$pid/cmdline; echo; cat /proc/$pid/cgroup; systemctl is-active banger-agent; journalctl -b -q --no-pager -u banger-agent | grep -c 'adopted by banger-agent.service'`))
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 4 || !strings.Contains(lines[0], "serve --identity-fd=3") ||
			lines[1] != "0::/system.slice/banger-agent.service" || lines[2] != "active" || lines[3] == "0" {
			t.Fatalf("the unit's main process is not the adopted early agent, or it does not log to the journal:\n%s", r.stdout)
		}
	})

	t.Run("a restarted agent unit serves by itself", func(t *testing.T) {
		// The unit adopts the early agent only once: restarted (it ends
		// the adopted agent), it boots from the config drive and serves,
		// with the same token, so the host reconnects. The guest is
		// watched over ssh meanwhile.
		//
		// An exec in flight dies with the agent. The host's serial session
		// outlives it (its connection is to the VMM), so unless the new
		// agent ends that session the exec would wait forever.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		type ended struct {
			err    error
			stderr string
		}
		inflight := make(chan ended, 1)
		go func() {
			cmd := e.ns.Command(ctx, filepath.Join(e.bin, "banger"), "vm", "exec", "t1", "--", "sleep", "600")
			var errb bytes.Buffer
			cmd.Env, cmd.Stderr = e.envv, &errb
			err := cmd.Run()
			inflight <- ended{err, errb.String()}
		}()
		if err := wait.Until(ctx, 200*time.Millisecond, func() (bool, error) {
			return e.banger("", "vm", "exec", "t1", "--", "pgrep", "-fx", "sleep 600").code == 0, nil
		}); err != nil {
			t.Fatalf("the in-flight exec never started: %v", err)
		}
		e.must(e.banger("", "vm", "exec", "t1", "--", "systemd-run", "--on-active=1", "systemctl", "restart", "banger-agent"))
		probe := `pid=$(systemctl show -p MainPID --value banger-agent); tr '\0' ' ' < /proc/$pid/cmdline; echo; systemctl is-active banger-agent`
		deadline := time.Now().Add(90 * time.Second)
		for {
			last := e.banger("", "vm", "ssh", "t1", "--", probe)
			lines := strings.Split(strings.TrimSpace(last.stdout), "\n")
			if last.code == 0 && len(lines) == 2 && strings.Contains(lines[0], "serve") &&
				!strings.Contains(lines[0], "--identity-fd") && lines[1] == "active" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the restarted unit never served by itself; last probe (exit %d):\n%s\n%s", last.code, last.stdout, last.stderr)
			}
			time.Sleep(500 * time.Millisecond) // polling the guest, not waiting on a guess
		}
		r := e.must(e.banger("", "vm", "exec", "t1", "--", "sh", "-c", "hostname; journalctl -b -q --no-pager -u banger-agent | grep -c 'identity applied'"))
		if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || lines[0] != "t1" || lines[1] == "0" {
			t.Errorf("after the restart: hostname and boots of the identity %q", r.stdout)
		}
		select {
		case got := <-inflight:
			if got.err == nil || ctx.Err() != nil {
				t.Fatalf("the exec in flight when the agent restarted ended with %v (deadline: %v)\n%s", got.err, ctx.Err(), got.stderr)
			}
			t.Logf("the exec in flight when the agent restarted: %v: %s", got.err, strings.TrimSpace(got.stderr))
		case <-time.After(time.Minute):
			t.Fatal("the exec in flight when the agent restarted still waits, a minute after the new agent served")
		}
	})

	t.Run("run skips the sshd wait and ssh waits for it", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "run", "--cold", "--name", "t3", "--", "true"))
		if !strings.Contains(r.stderr, "sshd not waited for") {
			t.Errorf("vm run -- CMD waited for sshd:\n%s", r.stderr)
		}
		// Straight after: ssh must wait for sshd, not be refused.
		if r := e.must(e.banger("", "vm", "ssh", "t3", "--", "hostname")); strings.TrimSpace(r.stdout) != "t3" {
			t.Errorf("ssh t3 right after vm run: %q\n%s", r.stdout, r.stderr)
		}
		// A cold boot's clock comes from the RTC, in whole seconds: the
		// host steps it once the agent answers.
		if !regexp.MustCompile(`agent ready: .*clock stepped`).MatchString(r.stderr) {
			t.Errorf("the cold boot's clock was not stepped:\n%s", r.stderr)
		}
		e.checkClockWithin(t, "t3", 250*time.Millisecond)
		e.must(e.banger("", "vm", "delete", "t3"))
	})

	t.Run("ports lists a guest listener", func(t *testing.T) {
		e.must(e.banger("", "vm", "exec", "t1", "--", "systemd-run", "--unit=bgports", "systemd-socket-activate", "-l", "8765", "cat"))
		var found bool
		for i := 0; i < 50 && !found; i++ {
			r := e.must(e.banger("", "vm", "ports", "t1", "--json"))
			found = strings.Contains(r.stdout, `"port": 8765`)
			if !found {
				time.Sleep(200 * time.Millisecond)
			}
		}
		if !found {
			t.Fatal("vm ports never listed the listener on 8765")
		}
	})

	t.Run("stats measure the guest and its VMM", func(t *testing.T) {
		// A busy loop and a 64 MiB file make the figures move.
		e.must(e.banger("", "vm", "exec", "t1", "--", "bash", "-c",
			"head -c 64M /dev/zero > /root/stats.bin && (timeout 20 sh -c 'while :; do :; done' >/dev/null 2>&1 &)"))
		r := e.must(e.banger("", "vm", "stats", "t1", "--json"))
		var st []api.VMStats
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st) != 1 {
			t.Fatalf("vm stats --json: %v: %q", err, r.stdout)
		}
		s := st[0]
		switch {
		case s.VM != "t1" || s.Error != "":
			t.Errorf("stats of %q, error %q", s.VM, s.Error)
		case s.MemTotal < 700<<20 || s.MemTotal > 1100<<20 || s.MemUsed == 0 || s.MemUsed >= s.MemTotal:
			t.Errorf("memory %d used of %d, want a 1024 MiB guest's", s.MemUsed, s.MemTotal)
		case s.CPUPercent < 20 || s.CPUPercent > 100:
			t.Errorf("guest cpu %.1f%% with one of 2 vCPUs spinning", s.CPUPercent)
		case s.Root.Size < 1<<30 || s.Root.Used < 64<<20:
			t.Errorf("/root %d used of %d, want the 2G work disk holding 64 MiB", s.Root.Used, s.Root.Size)
		case s.Overlay.Size == 0:
			t.Errorf("overlay %+v", s.Overlay)
		case s.VMMRSS < 100<<20 || s.VMMCPUPercent <= 0:
			t.Errorf("vmm rss %d, cpu %.1f%%", s.VMMRSS, s.VMMCPUPercent)
		case s.RxBytes == 0 || s.TxBytes == 0 || s.Interval < 0.9:
			t.Errorf("network %d/%d bytes over %.2fs", s.RxBytes, s.TxBytes, s.Interval)
		}
		// The table has the VM's row.
		if r := e.must(e.banger("", "vm", "stats")); !strings.Contains(r.stdout, "t1 ") || !strings.Contains(r.stdout, "VMM RSS") {
			t.Errorf("vm stats table:\n%s", r.stdout)
		}
		e.must(e.banger("", "vm", "exec", "t1", "--", "rm", "-f", "/root/stats.bin"))
	})

	t.Run("cp round-trips a tree with modes", func(t *testing.T) {
		src := t.TempDir()
		os.MkdirAll(filepath.Join(src, "tree", "sub"), 0o755)
		os.WriteFile(filepath.Join(src, "tree", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o751)
		os.WriteFile(filepath.Join(src, "tree", "sub", "secret"), []byte("s3cret"), 0o600)
		e.must(e.banger("", "vm", "cp", filepath.Join(src, "tree"), "t1:/root/"))
		r := e.must(e.banger("", "vm", "exec", "t1", "--", "stat", "-c", "%a %n", "/root/tree/run.sh", "/root/tree/sub/secret"))
		if !strings.Contains(r.stdout, "751 /root/tree/run.sh") || !strings.Contains(r.stdout, "600 /root/tree/sub/secret") {
			t.Fatalf("modes in guest:\n%s", r.stdout)
		}
		back := t.TempDir()
		e.must(e.banger("", "vm", "cp", "t1:/root/tree", back))
		st, err := os.Stat(filepath.Join(back, "tree", "run.sh"))
		if err != nil || st.Mode().Perm() != 0o751 {
			t.Fatalf("copied back: %v %v", st, err)
		}
		b, _ := os.ReadFile(filepath.Join(back, "tree", "sub", "secret"))
		if string(b) != "s3cret" {
			t.Fatalf("content copied back = %q", b)
		}
	})

	t.Run("dns answers NAME.vm", func(t *testing.T) {
		ip, _ := e.vm("t1")["ip"].(string)
		if got := e.lookupVM("t1"); len(got) != 1 || got[0] != ip {
			t.Fatalf("host query t1.vm = %v, want %s", got, ip)
		}
		r := e.must(e.banger("", "vm", "exec", "t1", "--", "getent", "hosts", "t1.vm"))
		if !strings.Contains(r.stdout, ip) {
			t.Fatalf("guest resolves t1.vm to %q, want %s", r.stdout, ip)
		}
	})

	t.Run("the config drive is unmounted after boot", func(t *testing.T) {
		// identity.json holds the agent token; once applied, no path in
		// the guest reaches it.
		r := e.must(e.banger("", "vm", "exec", "t1", "--", "sh", "-c",
			"grep -q ' /run/banger/config ' /proc/self/mountinfo && echo mounted; ls -A /run/banger/config 2>/dev/null; echo done"))
		if strings.TrimSpace(r.stdout) != "done" {
			t.Fatalf("config drive still reachable in the guest:\n%s", r.stdout)
		}
	})

	t.Run("the VMM runs under its seccomp sandbox", func(t *testing.T) {
		pid := int(e.vm("t1")["pid"].(float64))
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		// Seccomp: 2 is filter mode; QEMU without -sandbox runs with 0.
		if !regexp.MustCompile(`(?m)^Seccomp:\s+2$`).Match(status) {
			t.Fatalf("vmm pid %d is not seccomp-filtered:\n%s", pid, status)
		}
	})

	t.Run("survives kill -9 of the daemon", func(t *testing.T) {
		pid := e.daemonPID()
		if pid == 0 {
			t.Fatal("no daemon running")
		}
		e.must(e.banger("", "vm", "list"))
		if again := e.daemonPID(); again != pid {
			t.Fatalf("the CLI replaced a current daemon (pid %d -> %d)", pid, again)
		}
		// Left on the host while the daemon is down: a numbered pool tap
		// of an earlier banger (reclaimed at start) and a tap named after
		// a VM this daemon does not have, as another daemon's would be
		// (left alone).
		for _, tap := range []string{"bgtap77", "bgt0000000000f0"} {
			if _, err := e.ns.Run(context.Background(), "ip", "tuntap", "add", tap, "mode", "tap"); err != nil {
				t.Fatal(err)
			}
		}
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
		r := e.must(e.banger("", "vm", "exec", "t1", "--", "cat", "/etc/hostname"))
		if strings.TrimSpace(r.stdout) != "t1" {
			t.Fatalf("after daemon restart: %q", r.stdout)
		}
		links := e.links()
		if strings.Contains(links, ": bgtap77:") {
			t.Errorf("the restarted daemon left an earlier banger's pool tap bgtap77")
		}
		if !strings.Contains(links, ": bgt0000000000f0:") {
			t.Errorf("the restarted daemon deleted bgt0000000000f0, a tap of a vm it does not have")
		}
		if _, err := e.ns.Run(context.Background(), "ip", "link", "del", "bgt0000000000f0"); err != nil {
			t.Fatal(err)
		}
		if v := e.vm("t1"); v["state"] != "running" {
			t.Fatalf("state after restart = %v", v["state"])
		}
	})

	t.Run("pause, suspend and restore", func(t *testing.T) { e.checkPauseSuspend(t, "t1") })

	t.Run("snapshot and fork", func(t *testing.T) { e.checkSnapshotFork(t, "t1") })

	t.Run("warm start from an image template", func(t *testing.T) { e.checkWarm(t) })

	t.Run("mcp: create, exec, files, delete", func(t *testing.T) { e.mcpCheck(t) })

	t.Run("delete leaves nothing", func(t *testing.T) {
		v := e.vm("t1")
		dir, _ := v["dir"].(string)
		pid := int(v["pid"].(float64))
		id, _ := v["id"].(string)
		if len(id) < 12 || !strings.Contains(e.links(), ": bgt"+id[:12]+":") {
			t.Errorf("vm t1 (id %q) has no tap named after it:\n%s", id, e.links())
		}
		e.must(e.banger("", "vm", "delete", "t1"))
		if processRunning(pid) {
			t.Errorf("vmm pid %d still running", pid)
		}
		if got := e.lookupVM("t1"); len(got) != 0 {
			t.Errorf("t1.vm still resolves to %v after delete", got)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("vm dir %s still exists", dir)
		}
		r := e.banger("", "vm", "show", "t1")
		if r.code == 0 {
			t.Errorf("vm show t1 after delete succeeded")
		}
		// Taps are named after their VM and there is no pool: with no VM
		// left, no tap may remain.
		if taps := tapLinks.FindAllString(e.links(), -1); len(taps) != 0 {
			t.Errorf("taps left after deleting the last vm: %q", taps)
		}
		r = e.must(e.banger("", "daemon", "status", "--json"))
		if !strings.Contains(r.stdout, `"vms": 0`) {
			t.Errorf("daemon still counts VMs: %s", r.stdout)
		}
	})

	t.Run("run propagates the exit code", func(t *testing.T) {
		r := e.banger("", "vm", "run", "--rm", "--", "sh", "-c", "exit 7")
		if r.code != 7 {
			t.Fatalf("exit code = %d, want 7\nstderr: %s", r.code, r.stderr)
		}
		list := e.must(e.banger("", "vm", "list", "--json"))
		if strings.TrimSpace(list.stdout) != "[]" {
			t.Fatalf("--rm left a VM: %s", list.stdout)
		}
	})

	t.Run("a VMM killed behind the daemon's back is cleaned up", func(t *testing.T) {
		e.must(e.banger("", "vm", "create", "--name", "t2"))
		v := e.vm("t2")
		pid := int(v["pid"].(float64))
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for {
			v = e.vm("t2")
			if v["state"] == "stopped" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("state = %v, want stopped", v["state"])
			}
			time.Sleep(500 * time.Millisecond)
		}
		if le, _ := v["last_error"].(string); !strings.Contains(le, "exited") {
			t.Errorf("last_error = %q", le)
		}
		dir, _ := v["dir"].(string)
		if _, err := os.Stat(filepath.Join(dir, "handles.json")); !os.IsNotExist(err) {
			t.Errorf("handles.json left after the VMM died")
		}
	})

	// t2 was left stopped by its VMM's death: start it again, restart it,
	// stop it, and check what each promises.
	t.Run("start, restart and stop", func(t *testing.T) {
		bootID := func() string {
			t.Helper()
			r := e.must(e.banger("", "vm", "exec", "t2", "--", "cat", "/proc/sys/kernel/random/boot_id"))
			return strings.TrimSpace(r.stdout)
		}
		e.must(e.banger("", "vm", "start", "t2"))
		if v := e.vm("t2"); v["state"] != "running" {
			t.Fatalf("state after start = %v", v["state"])
		}
		first := bootID()
		e.must(e.banger("", "vm", "exec", "t2", "--", "sh", "-c", "echo kept > /root/kept && sync"))
		oldPID := int(e.vm("t2")["pid"].(float64))

		e.must(e.banger("", "vm", "restart", "t2"))
		v := e.vm("t2")
		if v["state"] != "running" {
			t.Fatalf("state after restart = %v", v["state"])
		}
		if pid := int(v["pid"].(float64)); pid == oldPID || processRunning(oldPID) {
			t.Errorf("restart kept the VMM: pid %d -> %d (old running: %v)", oldPID, pid, processRunning(oldPID))
		}
		if second := bootID(); second == first {
			t.Errorf("restart did not reboot the guest: boot_id %s unchanged", first)
		}
		r := e.must(e.banger("", "vm", "exec", "t2", "--", "sh", "-c", "hostname; cat /root/kept"))
		if r.stdout != "t2\nkept\n" {
			t.Errorf("after restart: %q, want hostname t2 and /root/kept", r.stdout)
		}

		pid := int(e.vm("t2")["pid"].(float64))
		id, _ := v["id"].(string)
		e.must(e.banger("", "vm", "stop", "t2"))
		if v := e.vm("t2"); v["state"] != "stopped" {
			t.Errorf("state after stop = %v", v["state"])
		}
		if processRunning(pid) {
			t.Errorf("vmm pid %d still running after stop", pid)
		}
		if len(id) >= 12 && strings.Contains(e.links(), ": bgt"+id[:12]+":") {
			t.Errorf("stop left t2's tap bgt%s", id[:12])
		}
		if r := e.banger("", "vm", "exec", "t2", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "not running") {
			t.Errorf("exec on a stopped vm: exit %d, stderr %q", r.code, r.stderr)
		}
		e.must(e.banger("", "vm", "delete", "t2"))
	})
}

// lookupVM asks the daemon's DNS listener in the test namespace for
// NAME.vm and returns the A records.
func (e *env) lookupVM(name string) []string {
	e.t.Helper()
	var got []string
	err := e.ns.Do(func() error {
		m := new(dns.Msg)
		m.SetQuestion(name+".vm.", dns.TypeA)
		in, err := dns.Exchange(m, "127.0.0.1:42169")
		if err != nil {
			return err
		}
		for _, rr := range in.Answer {
			if a, ok := rr.(*dns.A); ok {
				got = append(got, a.A.String())
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("dns query %s.vm: %v", name, err)
	}
	return got
}

// processRunning reports whether pid exists and is not a zombie waiting
// for a reaper (a VMM outlives the daemon that started it, so its parent
// may not be around to reap it).
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// tapLinks finds banger taps in `ip -o link show` output: named after a
// VM, or numbered pool taps of earlier daemons.
var tapLinks = regexp.MustCompile(`(?m)^\d+: (bgt[0-9a-f]{12}|bgtap[0-9]+)[:@]`)
