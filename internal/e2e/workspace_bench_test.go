package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkWorkspacePrepare compares, in one run on one VM, `vm workspace
// prepare` of a git repository into a guest without one with the naive
// pipe `tar cf - . | banger vm exec VM -- tar xf -` of the same tree, and
// a second prepare after one file changed and was committed (incremental:
// only what differs is sent). The ratios prepare/pipe and again/pipe are
// the figures.
//
//	CI=true go test -run '^$' -bench WorkspacePrepare -benchtime 2x ./internal/e2e/
func BenchmarkWorkspacePrepare(b *testing.B) {
	e := newEnv(b)
	e.ensureImage()
	e.must(e.banger("", "vm", "create", "--name", "wb"))
	repo := benchRepo(b, 2000, 16<<10)
	var pipe, prep, again time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		e.pipeTree(repo, "wb", "/root/pipe")
		pipe += time.Since(start)

		b.StopTimer()
		e.must(e.banger("", "vm", "exec", "wb", "--", "rm", "-rf", "/root/repo"))
		b.StartTimer()

		start = time.Now()
		e.must(e.banger("", "vm", "workspace", "prepare", "wb", "--path", repo))
		prep += time.Since(start)

		b.StopTimer()
		f := filepath.Join(repo, "d0", "f0.txt")
		if err := os.WriteFile(f, fmt.Appendf(nil, "changed %d\n", i), 0o644); err != nil {
			b.Fatal(err)
		}
		hostGit(b, repo, "commit", "-qam", fmt.Sprintf("change %d", i))
		b.StartTimer()

		start = time.Now()
		e.must(e.banger("", "vm", "workspace", "prepare", "wb", "--path", repo))
		again += time.Since(start)

		b.StopTimer()
		r := e.must(e.banger("", "vm", "exec", "wb", "--", "sh", "-c", "cat /root/repo/d0/f0.txt; git -C /root/repo status --porcelain | wc -l"))
		if want := fmt.Sprintf("changed %d\n0\n", i); r.stdout != want {
			b.Fatalf("guest repo after the second prepare: %q, want %q", r.stdout, want)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(pipe.Seconds()/n, "s/pipe")
	b.ReportMetric(prep.Seconds()/n, "s/prepare")
	b.ReportMetric(again.Seconds()/n, "s/prepare-again")
	b.ReportMetric(prep.Seconds()/pipe.Seconds(), "prepare/pipe")
	b.ReportMetric(again.Seconds()/pipe.Seconds(), "again/pipe")
}

// benchRepo makes a git repository of files spread over 20 directories,
// of random sizes averaging avg bytes (incompressible), in two commits.
func benchRepo(b *testing.B, files, avg int) string {
	b.Helper()
	repo := b.TempDir()
	hostGit(b, repo, "init", "-q", "-b", "main")
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2*avg)
	for i := range files {
		dir := filepath.Join(repo, fmt.Sprintf("d%d", i%20))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		n := rng.IntN(2 * avg)
		for j := range buf[:n] {
			buf[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.txt", i/20)), buf[:n], 0o644); err != nil {
			b.Fatal(err)
		}
		if i == files/2 {
			hostGit(b, repo, "add", "-A")
			hostGit(b, repo, "commit", "-qm", "first half")
		}
	}
	hostGit(b, repo, "add", "-A")
	hostGit(b, repo, "commit", "-qm", "second half")
	return repo
}

// pipeTree sends dir to the VM with tar through `vm exec`, the naive way.
func (e *env) pipeTree(dir, vm, dst string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	script := fmt.Sprintf("tar cf - -C %s . | %s vm exec %s -- sh -c 'rm -rf %s && mkdir -p %s && tar xf - -C %s'",
		dir, filepath.Join(e.bin, "banger"), vm, dst, dst, dst)
	cmd := e.ns.Command(ctx, "sh", "-c", script)
	if r := e.run(cmd, ""); r.code != 0 {
		e.t.Fatalf("pipe: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
}
