package debian_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/disk/disktest"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/image/debian/debiantest"
)

// BenchmarkBuildDefault_Cached measures a rebuild of debian-12 whose
// bootstrap is cached (unpack, configure, kernel, mkfs): the cost of every
// build after the first. A cold build (mmdebstrap) runs once before the
// timer when the cache is empty. It reports the boot set's size: apparent
// bytes of all files and bytes actually allocated (the disks are sparse).
func BenchmarkBuildDefault_Cached(b *testing.B) {
	debiantest.RequireBuild(b)
	agent := debiantest.AgentBin(b)
	cache := filepath.Join(debiantest.CacheDir(b), "debian")
	r := debian.Default()
	build := func() string {
		out, err := os.MkdirTemp("", "banger-bench-")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := debian.Build(context.Background(), r, debian.BuildOptions{
			AgentBin: agent, CacheDir: cache, Log: io.Discard,
		}, out); err != nil {
			b.Fatal(err)
		}
		return out
	}
	if _, err := os.Stat(debian.CachePath(cache, r)); err != nil {
		os.RemoveAll(build()) // warm the bootstrap cache outside the timer
	}
	var apparent, allocated, rootfs int64
	b.ResetTimer()
	for b.Loop() {
		out := build()
		b.StopTimer()
		apparent, allocated = 0, 0
		for _, f := range image.BootFiles {
			al, ap, err := disktest.Usage(filepath.Join(out, f))
			if err != nil {
				b.Fatal(err)
			}
			apparent += ap
			allocated += al
			if f == image.FileRootfs {
				rootfs = al
			}
		}
		os.RemoveAll(out)
		b.StartTimer()
	}
	const mib = 1 << 20
	b.ReportMetric(float64(apparent)/mib, "apparent-MiB")
	b.ReportMetric(float64(allocated)/mib, "allocated-MiB")
	b.ReportMetric(float64(rootfs)/mib, "rootfs-allocated-MiB")
}
