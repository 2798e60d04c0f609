package debian

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/hostcap"
)

// capturedLog is real output of `mmdebstrap --variant=minbase
// --include=less --verbose bookworm` (mmdebstrap 1.3.5), trimmed: 69
// essential packages downloaded, unpacked and set up, then 28 more
// installed by apt in the chroot.
const capturedLog = "testdata/mmdebstrap-minbase.log"

// hookInfo is the line mmdebstrap prints as it starts a customize hook
// through the shell.
func hookInfo(hook string) string {
	return hookLine + "sh -c '" + hook + "' exec /tmp/mmdebstrap.XXXXXXXXXX"
}

func TestPackageCounter(t *testing.T) {
	agents := Recipe{NPMPackages: []string{"a", "@s/b"}}
	hooks := npmHooks(agents)
	tests := []struct {
		name  string
		npm   int
		lines []string
		want  []PackageProgress
	}{
		{
			name: "apt-get update downloads are no packages",
			lines: []string{
				"I: running apt-get update...",
				"Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]",
				"Get:2 http://deb.debian.org/debian bookworm/main amd64 Packages [8792 kB]",
				"Fetched 9425 kB in 2s (4747 kB/s)",
			},
		},
		{
			name: "a run downloads then unpacks then sets up",
			lines: []string{
				"0 upgraded, 3 newly installed, 0 to remove and 0 not upgraded.",
				"Need to get 1254 kB of archives.",
				"Get:1 http://deb.debian.org/debian bookworm/main amd64 libcom-err2 amd64 1.47.0-2+b2 [20.0 kB]",
				"Get:2 http://security.debian.org/debian-security bookworm-security/main amd64 libapt-pkg6.0 amd64 2.6.2 [907 kB]",
				"Get:3 http://deb.debian.org/debian bookworm/main amd64 less amd64 590-2.1~deb12u2 [132 kB]",
				"Fetched 1059 kB in 0s (28.0 MB/s)",
				"Selecting previously unselected package libcom-err2:amd64.",
				"Preparing to unpack .../libcom-err2_1.47.0-2+b2_amd64.deb ...",
				"Unpacking libcom-err2:amd64 (1.47.0-2+b2) ...",
				"Unpacking libapt-pkg6.0:amd64 (2.6.2) ...",
				"Unpacking less (590-2.1~deb12u2) ...",
				"Setting up libcom-err2:amd64 (1.47.0-2+b2) ...",
				"Setting up less (590-2.1~deb12u2) ...",
				"Setting up libapt-pkg6.0:amd64 (2.6.2) ...",
				"Processing triggers for libc-bin (2.36-9+deb12u14) ...",
			},
			want: []PackageProgress{
				{PhaseFetch, 0, 3}, {PhaseFetch, 1, 3}, {PhaseFetch, 2, 3}, {PhaseFetch, 3, 3},
				{PhaseUnpack, 1, 3}, {PhaseUnpack, 2, 3}, {PhaseUnpack, 3, 3},
				{PhaseSetup, 1, 3}, {PhaseSetup, 2, 3}, {PhaseSetup, 3, 3},
			},
		},
		{
			name: "a retried download counts once, later downloads not at all",
			lines: []string{
				"0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.",
				"Get:1 http://deb.debian.org/debian bookworm/main amd64 tzdata all 2024a-0+deb12u1 [255 kB]",
				"Ign:1 http://deb.debian.org/debian bookworm/main amd64 tzdata all 2024a-0+deb12u1",
				"Get:1 http://deb.debian.org/debian bookworm/main amd64 tzdata all 2024a-0+deb12u1 [255 kB]",
				"Unpacking tzdata (2024a-0+deb12u1) ...",
				"Get:2 http://deb.debian.org/debian bookworm/main amd64 libffi8 amd64 3.4.4-1 [22.9 kB]",
			},
			want: []PackageProgress{{PhaseFetch, 0, 2}, {PhaseFetch, 1, 2}, {PhaseUnpack, 1, 2}},
		},
		{
			name: "runs sum their totals",
			lines: []string{
				"0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.",
				"Get:1 http://deb.debian.org/debian bookworm/main amd64 mawk amd64 1.3.4.20200120-3.1 [119 kB]",
				"Get:2 http://deb.debian.org/debian bookworm/main amd64 dash amd64 0.5.12-2 [90.8 kB]",
				"Unpacking mawk (1.3.4.20200120-3.1) ...",
				"Unpacking dash (0.5.12-2) ...",
				"Setting up mawk (1.3.4.20200120-3.1) ...",
				"Setting up dash (0.5.12-2) ...",
				"I: installing remaining packages inside the chroot...",
				"0 upgraded, 1 newly installed, 1 reinstalled, 0 to remove and 0 not upgraded.",
				"Get:1 http://deb.debian.org/debian bookworm/main amd64 less amd64 590-2.1~deb12u2 [132 kB]",
				"Get:2 http://deb.debian.org/debian bookworm/main amd64 dash amd64 0.5.12-2 [90.8 kB]",
				"Unpacking less (590-2.1~deb12u2) ...",
				"Unpacking dash (0.5.12-2) over (0.5.12-2) ...",
				"Setting up less (590-2.1~deb12u2) ...",
				"Setting up dash (0.5.12-2) ...",
			},
			want: []PackageProgress{
				{PhaseFetch, 0, 2}, {PhaseFetch, 1, 2}, {PhaseFetch, 2, 2},
				{PhaseUnpack, 1, 2}, {PhaseUnpack, 2, 2}, {PhaseSetup, 1, 2}, {PhaseSetup, 2, 2},
				// A package installed again counts in each run.
				{PhaseFetch, 2, 4}, {PhaseFetch, 3, 4}, {PhaseFetch, 4, 4},
				{PhaseUnpack, 3, 4}, {PhaseUnpack, 4, 4}, {PhaseSetup, 3, 4}, {PhaseSetup, 4, 4},
			},
		},
		{
			name: "interleaved unpacking stays in setup",
			lines: []string{
				"0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.",
				"Unpacking gcc-12-base:amd64 (12.2.0-14+deb12u1) ...",
				"Setting up gcc-12-base:amd64 (12.2.0-14+deb12u1) ...",
				"Unpacking libc6:amd64 (2.36-9+deb12u14) ...",
				"Setting up libc6:amd64 (2.36-9+deb12u14) ...",
			},
			want: []PackageProgress{{PhaseFetch, 0, 2}, {PhaseUnpack, 1, 2}, {PhaseSetup, 1, 2}, {PhaseSetup, 2, 2}},
		},
		{
			name: "a pre-dependency set up early",
			lines: []string{
				"0 upgraded, 3 newly installed, 0 to remove and 0 not upgraded.",
				"Unpacking libcom-err2:amd64 (1.47.0-2+b2) ...",
				"Setting up libcom-err2:amd64 (1.47.0-2+b2) ...",
				"Unpacking libapt-pkg6.0:amd64 (2.6.2) ...",
				"Unpacking less (590-2.1~deb12u2) ...",
				"Setting up libapt-pkg6.0:amd64 (2.6.2) ...",
				"Setting up less (590-2.1~deb12u2) ...",
			},
			want: []PackageProgress{
				{PhaseFetch, 0, 3}, {PhaseUnpack, 1, 3}, {PhaseSetup, 1, 3},
				{PhaseUnpack, 3, 3}, {PhaseSetup, 2, 3}, {PhaseSetup, 3, 3},
			},
		},
		{
			name: "no total known",
			lines: []string{
				"Unpacking hello (2.10-3) ...",
				"Setting up hello (2.10-3) ...",
				"Setting up hello2 (2.10-3) ...",
			},
			want: []PackageProgress{{PhaseUnpack, 1, 0}, {PhaseSetup, 1, 0}, {PhaseSetup, 2, 0}},
		},
		{
			name: "counts stop at the total",
			lines: []string{
				"0 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.",
				"Setting up a (1) ...",
				"Setting up b (1) ...",
				"Setting up c (1) ...",
			},
			want: []PackageProgress{{PhaseFetch, 0, 1}, {PhaseSetup, 1, 1}},
		},
		{
			name: "nothing to install starts no run",
			lines: []string{
				"0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.",
				"Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]",
			},
		},
		{
			name: "not dpkg lines",
			lines: []string{
				"Setting up the network",
				"Unpacking",
				"Get:x http://deb.debian.org/debian bookworm InRelease",
				"I: installing essential packages...",
			},
		},
		{
			name: "npm hooks",
			npm:  2,
			lines: []string{
				hookInfo(hooks[0]), // the CA copy
				hookInfo(hooks[1]),
				"added 1 package in 2s",
				hookInfo(hooks[2]),
				"added 3 packages in 5s",
				hookInfo(hooks[3]), // npm ls
				hookInfo(`echo '` + stageMarker + StageInitramfs + `'`),
			},
			want: []PackageProgress{{PhaseNPM, 0, 2}, {PhaseNPM, 1, 2}, {PhaseNPM, 2, 2}},
		},
		{
			name:  "npm hooks without npm packages",
			lines: []string{hookInfo(hooks[1])},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []PackageProgress
			c := newPackageCounter(tc.npm, func(p PackageProgress) { got = append(got, p) })
			for _, l := range tc.lines {
				c.line(l)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("progress\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// checkProgress checks what a bootstrap reports: within a phase the
// figures never go back, a count never exceeds its known total, and the
// last report is every package set up.
func checkProgress(t *testing.T, got []PackageProgress, total int64) {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("no progress reported")
	}
	prev := map[string]PackageProgress{}
	for _, p := range got {
		if p.Total <= 0 || p.Done > p.Total || p.Done < 0 {
			t.Errorf("report %v: want a known total and a count within it", p)
		}
		if q, ok := prev[p.Phase]; ok && (p.Done < q.Done || p.Total < q.Total) {
			t.Errorf("report %v after %v: went back", p, q)
		}
		prev[p.Phase] = p
	}
	want := PackageProgress{PhaseSetup, total, total}
	if last := got[len(got)-1]; last != want {
		t.Errorf("last report %v, want %v", last, want)
	}
	for _, ph := range []string{PhaseFetch, PhaseUnpack} {
		if p := prev[ph]; p.Done != total || p.Total != total {
			t.Errorf("%s ended at %v, want %d/%d", ph, p, total, total)
		}
	}
}

func TestPackageWriter_CapturedLog(t *testing.T) {
	data, err := os.ReadFile(capturedLog)
	if err != nil {
		t.Fatal(err)
	}
	// Whole, line by line and in odd chunks, the same reports.
	var first []PackageProgress
	for _, size := range []int{len(data), 1, 7, 4096} {
		var got []PackageProgress
		w := newPackageWriter(0, func(p PackageProgress) { got = append(got, p) })
		for b := data; len(b) > 0; {
			n := min(size, len(b))
			if _, err := w.Write(b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
		checkProgress(t, got, 69+28)
		if first == nil {
			first = got
			// The essential packages' total first, the sum once the
			// remaining packages' run starts.
			if !slices.Contains(got, PackageProgress{PhaseFetch, 69, 69}) || !slices.Contains(got, PackageProgress{PhaseFetch, 69, 97}) {
				t.Errorf("reports lack the essential run's end or the second run's start: %v", got)
			}
		} else if !slices.Equal(got, first) {
			t.Errorf("writes of %d bytes: reports differ from one write", size)
		}
	}
}

// TestBootstrap_ReportsPackages runs bootstrap with a stand-in
// mmdebstrap that prints the captured log and checks the reports reach
// BuildOptions.Packages' callback and the cache entry is stored.
func TestBootstrap_ReportsPackages(t *testing.T) {
	log, err := filepath.Abs(capturedLog)
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	// The tarball is the second to last argument.
	script := fmt.Sprintf("#!/bin/sh\ncase \" $* \" in *' --verbose '*) ;; *) echo 'no --verbose' >&2; exit 2;; esac\ncat %s >&2\neval \"out=\\${$(($#-1))}\"\necho tarball >\"$out\"\n", shellQuote(log))
	if err := os.WriteFile(filepath.Join(bin, "mmdebstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	real := hostProbes
	t.Cleanup(func() { hostProbes = real })
	hostProbes = func() hostcap.Probes {
		p := hostcap.Real()
		p.Geteuid = func() int { return 0 } // no subordinate ids needed
		return p
	}

	dir := t.TempDir()
	tarball := filepath.Join(dir, "cache", "x", cacheTarball)
	var got []PackageProgress
	var stages []string
	var out strings.Builder
	err = bootstrap(context.Background(), Default(), tarball, dir, &out,
		func(stage string, done, total int64) {
			stages = append(stages, fmt.Sprintf("%s %d/%d", stage, done, total))
		},
		func(p PackageProgress) { got = append(got, p) })
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out.String())
	}
	checkProgress(t, got, 97)
	if b, err := os.ReadFile(tarball); err != nil || string(b) != "tarball\n" {
		t.Errorf("cache entry %q, %v", b, err)
	}
	if !strings.Contains(out.String(), "Setting up sysvinit-utils") {
		t.Error("the build log lacks mmdebstrap's output")
	}
	if want := []string{"bootstrap 1/1", "initramfs 0/1", "initramfs 1/1"}; !slices.Equal(stages, want) {
		t.Errorf("stages %q, want %q", stages, want)
	}
}
