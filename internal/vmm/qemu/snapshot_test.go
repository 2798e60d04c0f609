package qemu

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// echo writes ping lines on the agent port until the guest echoes one
// back: the guest's userspace runs.
func echo(ctx context.Context, t *testing.T, path string) {
	t.Helper()
	echoOn(ctx, t, path).Close()
}

// echoOn is echo returning the connection, still open. Bytes written
// before the guest opened its end of the port may be lost, so the host
// repeats its ping until an echo arrives.
func echoOn(ctx context.Context, t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := (&netDialer{}).dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		lines <- line
	}()
	for {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		select {
		case line := <-lines:
			if line != "ping\n" {
				t.Fatalf("echo = %q", line)
			}
			return c
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}

// TestDriver_SaveRestore boots the busybox guest, pauses and resumes it,
// saves it (through a descriptor: QEMU runs under -sandbox spawn=deny),
// ends the VMM and restores it: the guest answers on its port again and
// the console shows it was not booted a second time. A corrupt state file
// is refused by VerifyState, and one that passes no checks but is not a
// migration stream makes Start fail and leaves no process.
func TestDriver_SaveRestore(t *testing.T) {
	vmmtest.RequireBinary(t, DefaultBinary)
	k := vmmtest.DebianKernel(t)
	s := bootSpec(t, k, vmmtest.BusyboxInitramfs(t, k))
	d := &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	waitConsole(ctx, t, h.ConsoleLog, vmmtest.MarkerReady)

	// Quiesce: the host hangs up and the guest closes its port (the
	// busybox echo loop ends cat on EOF, as the agent ends its session),
	// which QEMU reports as VSERPORT_CHANGE open=false.
	c := echoOn(ctx, t, h.SerialSocket)
	if err := d.QuiesceAgent(ctx, h, func() bool { c.Close(); return true }, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.QuiesceAgent(ctx, h, func() bool { return false }, time.Nanosecond); err != nil {
		t.Fatalf("QuiesceAgent with no host connection waited: %v", err)
	}
	echo(ctx, t, h.SerialSocket)

	if err := d.Pause(ctx, h); err != nil {
		t.Fatal(err)
	}
	if st := status(ctx, t, h); st != "paused" {
		t.Fatalf("status after Pause = %q", st)
	}
	if err := d.Resume(ctx, h); err != nil {
		t.Fatal(err)
	}
	if st := status(ctx, t, h); st != "running" {
		t.Fatalf("status after Resume = %q", st)
	}

	dir := t.TempDir()
	start := time.Now()
	saved, err := d.Save(ctx, h, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %+v in %s", saved.Files, time.Since(start).Round(time.Millisecond))
	want, err := d.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if saved.VMM != vmm.QEMU || saved.Version != want || len(saved.Files) != 1 || saved.Files[0].Size == 0 {
		t.Fatalf("saved state %+v; want qemu %q and one non-empty file", saved, want)
	}
	if err := vmm.VerifyState(dir, saved); err != nil {
		t.Fatal(err)
	}
	// The kernel the guest booted from, asked over QMP (no /proc).
	if saved.Kernel != filepath.Base(s.BzImage) {
		t.Errorf("saved kernel %q, want %q", saved.Kernel, filepath.Base(s.BzImage))
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Fatal(err)
	}

	s.RestoreDir = dir
	start = time.Now()
	h2, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h2) })
	t.Logf("restored to running in %s", time.Since(start).Round(time.Millisecond))
	echo(ctx, t, h2.SerialSocket)
	b, _ := os.ReadFile(h2.ConsoleLog)
	if n := strings.Count(string(b), vmmtest.MarkerBooted); n != 1 {
		t.Fatalf("console shows %d boots, want 1 (restored, not rebooted):\n%s", n, b)
	}
	if err := d.Kill(ctx, h2); err != nil {
		t.Fatal(err)
	}

	// One flipped byte: VerifyState refuses it before any VMM reads it.
	p := filepath.Join(dir, StateFile)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	_, _ = f.ReadAt(one, saved.Files[0].Size/2)
	one[0] ^= 0xff
	_, _ = f.WriteAt(one, saved.Files[0].Size/2)
	f.Close()
	if err := vmm.VerifyState(dir, saved); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("VerifyState of a corrupt file = %v", err)
	}
	// Truncated: refused by size.
	if err := os.Truncate(p, saved.Files[0].Size/2); err != nil {
		t.Fatal(err)
	}
	if err := vmm.VerifyState(dir, saved); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("VerifyState of a truncated file = %v", err)
	}
	// Garbage given to QEMU directly: Start fails and nothing runs.
	if err := os.WriteFile(p, []byte("not a migration stream"), 0o600); err != nil {
		t.Fatal(err)
	}
	spawned := make(chan vmm.Handles, 1)
	s.OnSpawn = func(h vmm.Handles) error { spawned <- h; return nil }
	if _, err := d.Start(ctx, s); err == nil {
		t.Fatal("Start restored a garbage state file")
	}
	if ok, _ := vmm.Check(<-spawned); ok {
		t.Fatal("qemu outlived a failed restore")
	}
}

func status(ctx context.Context, t *testing.T, h vmm.Handles) string {
	t.Helper()
	q, err := dialQMP(ctx, h.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	st, err := q.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
