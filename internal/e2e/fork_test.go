package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkSnapshotFork runs on a booted VM NAME. It starts a ticking session
// and a workspace in it, forks it twice and checks that each copy is a
// working VM of its own (hostname, address, MAC, DNS) whose session ticks
// on and is attachable and whose workspace pulls back as its own branch,
// while the source runs on. Then a named snapshot: a VM made from it, a
// corrupted one refused with nothing left behind, rm. Last, bangerd is
// killed in the middle of a fork: the next start ends the half-made
// copy's VMM, lets the source run and removes the fork's snapshot.
func (e *env) checkSnapshotFork(t *testing.T, name string) {
	e.must(e.banger("", "vm", "session", "start", name, "--name", "ticker", "--",
		"sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; echo $i > /root/tick; sleep 0.2; done"))
	repo := filepath.Join(t.TempDir(), "repo")
	os.MkdirAll(repo, 0o755)
	hostGit(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "README"), []byte("fork me\n"), 0o644)
	hostGit(t, repo, "add", ".")
	hostGit(t, repo, "commit", "-q", "-m", "base")
	e.must(e.banger("", "vm", "workspace", "prepare", name, "--path", repo))
	src := e.vm(name)
	base := e.tick(t, name, 0)

	t.Run("fork -n 2", func(t *testing.T) {
		start := time.Now()
		r := e.must(e.banger("", "vm", "fork", name, "-n", "2", "--name", "k"))
		t.Logf("fork -n 2 took %s:\n%s", time.Since(start).Round(time.Millisecond), r.stderr)
		if got := strings.Fields(r.stdout); !slices.Equal(got, []string{"k-1", "k-2"}) {
			t.Fatalf("fork printed %q, want k-1 k-2", r.stdout)
		}
		ips := map[string]string{name: fmt.Sprint(src["ip"])}
		for _, c := range []string{"k-1", "k-2"} {
			v := e.vm(c)
			if v["state"] != "running" {
				t.Fatalf("%s is %v", c, v["state"])
			}
			for other, ip := range ips {
				if fmt.Sprint(v["ip"]) == ip {
					t.Errorf("%s and %s share the address %s", c, other, ip)
				}
			}
			ips[c] = fmt.Sprint(v["ip"])
			out := e.must(e.banger("", "vm", "exec", c, "--", "sh", "-c", "hostname; cat /sys/class/net/e*/address")).stdout
			if want := fmt.Sprintf("%s\n%v\n", c, v["mac"]); out != want {
				t.Errorf("%s: hostname and mac %q, want %q", c, out, want)
			}
			if got := e.lookupVM(c); len(got) != 1 || got[0] != v["ip"] {
				t.Errorf("%s.vm resolves to %v", c, got)
			}
			// The session's process came along: it counts on from where
			// the source was, is listed and can be attached to.
			if n := e.tick(t, c, base); n <= base {
				t.Errorf("%s: tick %d, source was at %d", c, n, base)
			}
			if s := e.sessions(c)["ticker"]; s.State != "running" {
				t.Errorf("%s: session ticker is %q", c, s.State)
			}
			if n := tickNumber(t, e.attachUntil(t, c, "ticker", "tick")); n <= base {
				t.Errorf("%s: attach shows tick %d, source was at %d", c, n, base)
			}
			e.checkClock(t, c)
			e.must(e.banger("", "vm", "exec", c, "-w", "/root/repo", "--", "sh", "-c",
				"echo "+c+" > answer && git add answer && git -c user.name=guest -c user.email=guest@example.com commit -q -m 'answer of "+c+"'"))
			e.must(e.banger("", "vm", "workspace", "pull", c, "--path", repo))
			if got := hostGit(t, repo, "log", "--format=%s", "banger/"+c); got != "answer of "+c+"\nbase" {
				t.Errorf("banger/%s history = %q", c, got)
			}
		}
		// The source runs on, untouched by its copies' commits.
		e.tick(t, name, base)
		if r := e.must(e.banger("", "vm", "exec", name, "-w", "/root/repo", "--", "git", "log", "--format=%s")); strings.TrimSpace(r.stdout) != "base" {
			t.Errorf("source repo history %q", r.stdout)
		}
		e.must(e.banger("", "vm", "delete", "k-1", "k-2"))
	})

	t.Run("named snapshot, create --from, corrupt refused", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "snapshot", name, "--name", "s1"))
		if strings.TrimSpace(r.stdout) != name+"@s1" {
			t.Fatalf("snapshot printed %q", r.stdout)
		}
		var list []struct {
			Ref      string `json:"ref"`
			Sessions int    `json:"sessions"`
		}
		lr := e.must(e.banger("", "vm", "snapshot", "list", "--json"))
		if err := json.Unmarshal([]byte(lr.stdout), &list); err != nil || len(list) != 1 || list[0].Ref != name+"@s1" || list[0].Sessions < 1 {
			t.Fatalf("snapshot list: %v %s", err, lr.stdout)
		}
		e.must(e.banger("", "vm", "create", "--from", name+"@s1", "--name", "k-3"))
		if out := e.must(e.banger("", "vm", "exec", "k-3", "--", "sh", "-c", "hostname; cat /root/repo/README")).stdout; out != "k-3\nfork me\n" {
			t.Errorf("k-3 from the snapshot: %q", out)
		}
		e.tick(t, "k-3", base)
		e.must(e.banger("", "vm", "delete", "k-3"))

		dir := fmt.Sprint(src["dir"])
		p := filepath.Join(dir, "snapshots", "s1", "vmstate")
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		f.WriteAt([]byte("banger"), st.Size()/2)
		f.Close()
		before := e.vmmPIDs()
		r = e.banger("", "vm", "create", "--from", name+"@s1", "--name", "k-4")
		if r.code == 0 || !strings.Contains(r.stderr, "corrupt") || !strings.Contains(r.stderr, "snapshot "+name+"@s1") {
			t.Fatalf("create from a corrupt snapshot: exit %d\n%s", r.code, r.stderr)
		}
		if r := e.banger("", "vm", "show", "k-4"); r.code == 0 {
			t.Error("a refused create left the vm k-4")
		}
		if after := e.vmmPIDs(); len(after) != len(before) {
			t.Errorf("vmm processes %v after a refused create, %v before", after, before)
		}
		e.must(e.banger("", "vm", "snapshot", "rm", name+"@s1"))
		if _, err := os.Stat(filepath.Join(dir, "snapshots", "s1")); !os.IsNotExist(err) {
			t.Errorf("snapshot rm left %v", err)
		}
	})

	t.Run("kill -9 of bangerd mid-fork leaves nothing behind", func(t *testing.T) {
		// Killed while the copy is being restored.
		vmmPID := e.killDaemonWhileCreating(t, "z-1", "vm", "fork", name, "--name", "z")
		e.must(e.banger("", "vm", "list"))
		waitGone(vmmPID, 10*time.Second)
		if processRunning(vmmPID) {
			t.Fatalf("vmm pid %d of the interrupted copy still runs", vmmPID)
		}
		if st := e.vm("z-1")["state"]; st != "failed" {
			t.Errorf("z-1 after the restart is %v, want failed", st)
		}
		if st := e.vm(name)["state"]; st != "running" {
			t.Errorf("the source is %v after the restart, want running", st)
		}
		e.tick(t, name, e.tick(t, name, 0))
		ents, _ := os.ReadDir(filepath.Join(fmt.Sprint(src["dir"]), "snapshots"))
		for _, ent := range ents {
			t.Errorf("left in the source's snapshots: %s", ent.Name())
		}
		e.must(e.banger("", "vm", "delete", "z-1"))
		if pids := e.vmmPIDs(); len(pids) != 1 {
			t.Errorf("vmm processes after the cleanup: %v, want only the source's", pids)
		}
	})
}

// tick polls /root/tick in vm until it exceeds above, and returns it.
func (e *env) tick(t *testing.T, vm string, above int) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := e.banger("", "vm", "exec", vm, "--", "cat", "/root/tick")
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(r.stdout), &n); r.code == 0 && err == nil && n > above {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: tick never went above %d (last %q, %s)", vm, above, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
