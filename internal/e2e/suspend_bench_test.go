package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/layout"
	"banger/internal/vmm/qemu"
)

// BenchmarkSuspendRestore measures, in one run on one VM: `vm suspend`,
// `vm start` of the suspended VM to a finished `vm exec -- true`, and a
// cold `vm start` to the same point, with their ratio; the size of the
// saved state; and the host RSS of the VMM after a cold boot, after a
// restore, and of a bare boot of the same argv with QEMU's default 1 GiB
// TCG cache instead of banger's (the ratio shows what tb-size saves).
//
//	CI=true go test -run '^$' -bench SuspendRestore -benchtime 3x ./internal/e2e/
func BenchmarkSuspendRestore(b *testing.B) {
	e := newEnv(b)
	e.ensureImage()
	c := &api.Client{Socket: e.socket}
	ctx := context.Background()
	e.must(e.banger("", "vm", "create", "--name", "sr"))
	run := func(args ...string) time.Duration {
		start := time.Now()
		e.must(e.banger("", args...))
		return time.Since(start)
	}
	var suspend, restore, cold time.Duration
	var stateBytes int64
	var rssCold, rssRestored float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		run("vm", "exec", "sr", "--", "true") // the guest is up and settled
		rssCold += rssMB(b, c, "sr")
		b.StartTimer()
		suspend += run("vm", "suspend", "sr")
		b.StopTimer()
		dir := vmDir(b, c, "sr")
		if fi, err := os.Stat(filepath.Join(dir, layout.SuspendDir, qemu.StateFile)); err == nil {
			stateBytes += fi.Size()
		}
		b.StartTimer()
		restore += run("vm", "start", "sr") + run("vm", "exec", "sr", "--", "true")
		b.StopTimer()
		rssRestored += rssMB(b, c, "sr")
		run("vm", "stop", "sr")
		b.StartTimer()
		cold += run("vm", "start", "sr") + run("vm", "exec", "sr", "--", "true")
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(suspend.Seconds()/n, "s/suspend")
	b.ReportMetric(restore.Seconds()/n, "s/restore-to-exec")
	b.ReportMetric(cold.Seconds()/n, "s/cold-start-to-exec")
	b.ReportMetric(restore.Seconds()/cold.Seconds(), "restore/cold")
	b.ReportMetric(float64(stateBytes)/n/(1<<20), "MiB/state")
	b.ReportMetric(rssCold/n, "MB/rss-cold")
	b.ReportMetric(rssRestored/n, "MB/rss-restored")

	// The same guest booted bare with QEMU's default TCG cache: its RSS
	// once the agent answers, against banger's cold boot above.
	vm, err := c.GetVM(ctx, "sr")
	if err != nil {
		b.Fatal(err)
	}
	argv, err := procCmdline(vm.PID)
	if err != nil {
		b.Fatal(err)
	}
	token, err := identityToken(filepath.Join(vm.Dir, layout.ConfigDriveFile))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.StopVM(ctx, "sr"); err != nil {
		b.Fatal(err)
	}
	for i, a := range argv {
		argv[i] = strings.Replace(a, "tb-size="+strconv.Itoa(qemu.TBSizeMiB), "tb-size=1024", 1)
	}
	var bareRSS float64
	if _, err := e.bareBootThen(ctx, argv, filepath.Join(vm.Dir, layout.AgentSocketFile), token, func(pid int) {
		bareRSS = rssOf(pid)
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(bareRSS, "MB/rss-bare-1GiB-tb")
	b.ReportMetric(rssCold/n/bareRSS, "rss-banger/rss-1GiB-tb")
}

func vmDir(b *testing.B, c *api.Client, name string) string {
	vm, err := c.GetVM(context.Background(), name)
	if err != nil {
		b.Fatal(err)
	}
	return vm.Dir
}

func rssMB(b *testing.B, c *api.Client, name string) float64 {
	vm, err := c.GetVM(context.Background(), name)
	if err != nil || vm.PID == 0 {
		b.Fatalf("vm %s: pid %d, %v", name, vm.PID, err)
	}
	return rssOf(vm.PID)
}

// rssOf is pid's resident set in MB (VmRSS is in kB).
func rssOf(pid int) float64 {
	f := strings.Fields(rss(pid))
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.ParseFloat(f[0], 64)
	return kb / 1000
}

// BenchmarkWarmRun compares, in one run, `vm run --rm -- true` restored
// from the image's warm template with the same command booted cold
// (--cold); the ratio warm/cold is the figure.
//
//	CI=true go test -run '^$' -bench WarmRun -benchtime 3x ./internal/e2e/
func BenchmarkWarmRun(b *testing.B) {
	e := newEnv(b)
	e.ensureImage()
	start := time.Now()
	e.must(e.banger("", "image", "warm"))
	b.ReportMetric(time.Since(start).Seconds(), "s/image-warm")
	var warm, cold time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r := e.must(e.banger("", "vm", "run", "--rm", "--", "true"))
		warm += time.Since(start)
		if !strings.Contains(r.stderr, "warm template") {
			b.Fatalf("vm run did not restore:\n%s", r.stderr)
		}
		start = time.Now()
		e.must(e.banger("", "vm", "run", "--rm", "--cold", "--", "true"))
		cold += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(warm.Seconds()/n, "s/warm-run")
	b.ReportMetric(cold.Seconds()/n, "s/cold-run")
	b.ReportMetric(warm.Seconds()/cold.Seconds(), "warm/cold")
}

// BenchmarkFork measures, in one run on one source VM: `vm fork -n 1` and
// `vm fork -n 4` to copies whose agents answer, the time per copy of
// each, and the host RSS of each copy's VMM against the source's (a copy
// restored from the snapshot holds only the memory it has touched).
//
//	CI=true go test -run '^$' -bench Fork -benchtime 2x ./internal/e2e/
func BenchmarkFork(b *testing.B) {
	e := newEnv(b)
	e.ensureImage()
	c := &api.Client{Socket: e.socket}
	e.must(e.banger("", "vm", "create", "--name", "fs"))
	e.must(e.banger("", "vm", "exec", "fs", "--", "true"))
	var one, four time.Duration
	var rssCopies, rssSource float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		e.must(e.banger("", "vm", "fork", "fs", "-n", "1", "--name", "one"))
		one += time.Since(start)
		b.StopTimer()
		e.must(e.banger("", "vm", "delete", "one-1"))
		b.StartTimer()
		start = time.Now()
		e.must(e.banger("", "vm", "fork", "fs", "-n", "4", "--name", "four"))
		four += time.Since(start)
		b.StopTimer()
		for j := 1; j <= 4; j++ {
			name := "four-" + strconv.Itoa(j)
			e.must(e.banger("", "vm", "exec", name, "--", "true"))
			rssCopies += rssMB(b, c, name) / 4
		}
		rssSource += rssMB(b, c, "fs")
		e.must(e.banger("", "vm", "delete", "four-1", "four-2", "four-3", "four-4"))
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(one.Seconds()/n, "s/fork-1")
	b.ReportMetric(four.Seconds()/n, "s/fork-4")
	b.ReportMetric(four.Seconds()/4/(one.Seconds()), "per-copy-4/fork-1")
	b.ReportMetric(rssCopies/n, "MB/rss-copy")
	b.ReportMetric(rssSource/n, "MB/rss-source")
	b.ReportMetric(rssCopies/rssSource, "rss-copy/rss-source")
}
