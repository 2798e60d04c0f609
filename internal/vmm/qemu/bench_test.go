package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/layout"
	"banger/internal/vmm/vmmtest"
)

// waitMarker polls path until it holds marker and returns when it did.
func waitMarker(ctx context.Context, b *testing.B, path, marker string) {
	b.Helper()
	for {
		if data, _ := os.ReadFile(path); strings.Contains(string(data), marker) {
			return
		}
		select {
		case <-ctx.Done():
			data, _ := os.ReadFile(path)
			b.Fatalf("no %q in %s: %v\n%s", marker, path, ctx.Err(), data)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// BenchmarkQEMUStartToConsoleMarker boots the busybox initramfs under TCG
// with the driver (Start, then the ready marker on the console) and with
// the same argv run bare, alternating, and reports both times and their
// ratio: the driver's overhead over the bare VMM.
func BenchmarkQEMUStartToConsoleMarker(b *testing.B) {
	vmmtest.RequireBinary(b, DefaultBinary)
	k := vmmtest.DebianKernel(b)
	initrd := vmmtest.BusyboxInitramfs(b, k)
	d := &Driver{}
	var driverTotal, bareTotal, startTotal time.Duration
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)

		s := bootSpec(b, k, initrd)
		t0 := time.Now()
		h, err := d.Start(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		startTotal += time.Since(t0)
		waitMarker(ctx, b, h.ConsoleLog, vmmtest.MarkerReady)
		driverTotal += time.Since(t0)
		if err := d.Kill(ctx, h); err != nil {
			b.Fatal(err)
		}

		bare := bootSpec(b, k, initrd)
		o, err := d.Options(bare)
		if err != nil {
			b.Fatal(err)
		}
		argv := Cmdline(bare, o)
		t0 = time.Now()
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitMarker(ctx, b, filepath.Join(bare.Dir, layout.ConsoleLogFile), vmmtest.MarkerReady)
		bareTotal += time.Since(t0)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		cancel()
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(driverTotal.Seconds()/n, "driver-s/boot")
	b.ReportMetric(bareTotal.Seconds()/n, "bare-s/boot")
	b.ReportMetric(startTotal.Seconds()/n, "driver-start-s")
	b.ReportMetric(driverTotal.Seconds()/bareTotal.Seconds(), "overhead-ratio")
}
