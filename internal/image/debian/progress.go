package debian

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

// PackageProgress is how far a bootstrap has got with its packages, read
// from mmdebstrap's --verbose output: in Phase, Done of Total packages
// (Total 0 when no total is known yet; Done never exceeds a known Total).
//
// The Debian phases count across every apt run of the bootstrap
// (mmdebstrap downloads and installs the essential packages first, then
// installs the remaining ones with apt in the chroot): Total is the sum
// of the totals the runs announced so far, so it grows when a later run
// starts, and Done counts the earlier runs' packages plus the current
// run's downloaded, unpacked or set up so far. Within a phase Done and
// Total never decrease. PhaseNPM counts the recipe's npm packages on their own.
type PackageProgress struct {
	Phase string
	Done  int64
	Total int64
}

// Package phases, in the order an apt run goes through them. A run goes
// back from setup to unpack only when dpkg unpacks more than one package
// ahead of those set up (apt has a pre-dependency set up early, then
// unpacks the rest), so that dpkg unpacking and setting up packages in
// turn keeps to one phase.
const (
	// PhaseFetch counts packages downloaded (apt's "Get:N" lines).
	PhaseFetch = "fetch"
	// PhaseUnpack counts packages unpacked (dpkg's "Unpacking PKG").
	PhaseUnpack = "unpack"
	// PhaseSetup counts packages configured (dpkg's "Setting up PKG").
	PhaseSetup = "setup"
	// PhaseNPM counts the recipe's npm packages whose install finished,
	// against the number of npm packages.
	PhaseNPM = "npm"
)

// aptSummary is apt's announcement of what a run installs: "0 upgraded,
// 28 newly installed, 0 to remove and 0 not upgraded." (with
// ", 1 reinstalled" after "newly installed" when there are any).
var aptSummary = regexp.MustCompile(`^(\d+) upgraded, (\d+) newly installed(?:, (\d+) reinstalled)?, \d+ to remove`)

// aptGet is the line apt prints as a download starts ("Get:12 http://...
// bookworm/main amd64 passwd amd64 1:4.13 [972 kB]"); the number names
// the item, so a retried download is counted once.
var aptGet = regexp.MustCompile(`^Get:(\d+) `)

// hookLine prefixes the line mmdebstrap prints as it runs a customize
// hook through the shell ("I: running --customize-hook in shell: sh -c
// '<hook>' exec <root>").
const hookLine = "I: running --customize-hook in shell: "

// Fragments of the npm hooks' command lines (npmHooks): one install per
// package, then the listing that records them.
const (
	npmInstallHook = " install --global "
	npmListHook    = " ls --global "
)

// packageCounter follows mmdebstrap's output a line at a time and
// reports PackageProgress as it changes.
type packageCounter struct {
	report func(PackageProgress)
	// npmTotal is how many npm packages the recipe installs.
	npmTotal int64

	total    int64           // sum of the totals of the apt runs so far
	base     int64           // the part of total from runs before this one
	runTotal int64           // the current run's total
	phase    string          // the current run's phase; "" outside a run
	gets     map[string]bool // download items of the current run
	unpacked map[string]bool // packages the current run unpacked
	setUp    map[string]bool // packages the current run set up
	npmRun   int64           // npm install hooks started
	last     PackageProgress
}

// newPackageCounter returns a counter reporting to report (nil: nowhere)
// for a recipe installing npmTotal npm packages.
func newPackageCounter(npmTotal int, report func(PackageProgress)) *packageCounter {
	if report == nil {
		report = func(PackageProgress) {}
	}
	return &packageCounter{
		report: report, npmTotal: int64(npmTotal),
		gets: map[string]bool{}, unpacked: map[string]bool{}, setUp: map[string]bool{},
	}
}

// phaseRank orders the phases of an apt run.
func phaseRank(p string) int {
	switch p {
	case PhaseFetch:
		return 1
	case PhaseUnpack:
		return 2
	case PhaseSetup:
		return 3
	}
	return 0
}

// line reads one line of output (without its newline).
func (c *packageCounter) line(l string) {
	l = strings.TrimRight(l, "\r")
	switch {
	case strings.HasPrefix(l, "Get:"):
		m := aptGet.FindStringSubmatch(l)
		if m == nil || c.phase != PhaseFetch {
			// apt-get update's index downloads, or a download after the
			// run moved on: not a package of the run's total.
			return
		}
		c.gets[m[1]] = true
		c.emit(PhaseFetch, c.runCount(c.gets))
	case strings.HasPrefix(l, "Unpacking "):
		if pkg := packageField(l, "Unpacking "); pkg != "" {
			c.unpacked[pkg] = true
			if c.phase == PhaseSetup && len(c.unpacked)-len(c.setUp) > 1 {
				c.phase = PhaseUnpack
			}
			c.advance(PhaseUnpack)
		}
	case strings.HasPrefix(l, "Setting up "):
		if pkg := packageField(l, "Setting up "); pkg != "" {
			c.setUp[pkg] = true
			c.advance(PhaseSetup)
		}
	case strings.HasPrefix(l, hookLine):
		c.hook(l[len(hookLine):])
	default:
		if m := aptSummary.FindStringSubmatch(l); m != nil {
			c.startRun(atoi(m[1]) + atoi(m[2]) + atoi(m[3]))
		}
	}
}

// startRun begins an apt run that installs n packages.
func (c *packageCounter) startRun(n int64) {
	if n <= 0 {
		return
	}
	c.base = c.total
	c.total += n
	c.runTotal = n
	c.phase = PhaseFetch
	clear(c.gets)
	clear(c.unpacked)
	clear(c.setUp)
	c.emit(PhaseFetch, c.base)
}

// advance moves the current run to phase p unless it is past it, and
// reports the count of the run's phase.
func (c *packageCounter) advance(p string) {
	if phaseRank(p) > phaseRank(c.phase) {
		c.phase = p
	}
	switch c.phase {
	case PhaseUnpack:
		c.emit(PhaseUnpack, c.runCount(c.unpacked))
	default:
		c.emit(PhaseSetup, c.runCount(c.setUp))
	}
}

// runCount is how many packages of all runs so far are done when the
// current run has done those in set: the earlier runs' packages and the
// current run's, at most its total when it announced one.
func (c *packageCounter) runCount(set map[string]bool) int64 {
	n := int64(len(set))
	if c.runTotal > 0 {
		n = min(n, c.runTotal)
	}
	return c.base + n
}

// hook reads the command line of a customize hook being started.
func (c *packageCounter) hook(cmd string) {
	if c.npmTotal == 0 {
		return
	}
	switch {
	case strings.Contains(cmd, npmInstallHook):
		c.npmRun++
		c.emitNPM(c.npmRun - 1)
	case strings.Contains(cmd, npmListHook):
		c.emitNPM(c.npmTotal)
	}
}

// emit reports done of the apt runs' total in phase p.
func (c *packageCounter) emit(p string, done int64) {
	c.send(PackageProgress{Phase: p, Done: done, Total: c.total})
}

// emitNPM reports done of the npm packages.
func (c *packageCounter) emitNPM(done int64) {
	c.send(PackageProgress{Phase: PhaseNPM, Done: done, Total: c.npmTotal})
}

// send reports p, its count held within its total, unless nothing
// changed.
func (c *packageCounter) send(p PackageProgress) {
	if p.Total > 0 {
		p.Done = min(p.Done, p.Total)
	}
	if p == c.last {
		return
	}
	c.last = p
	c.report(p)
}

// packageField is the package name after prefix in a dpkg line
// ("Unpacking libc6:amd64 (2.36-9) ..." -> "libc6:amd64").
func packageField(l, prefix string) string {
	f := strings.Fields(strings.TrimPrefix(l, prefix))
	if len(f) < 2 || !strings.HasPrefix(f[1], "(") {
		return ""
	}
	return f[0]
}

// atoi is the number s, 0 when s is empty or no number.
func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// packageWriter is the io.Writer end of a packageCounter: it cuts what
// is written into lines.
type packageWriter struct {
	c       *packageCounter
	partial []byte // the unterminated last line
}

// newPackageWriter returns a writer feeding the output written to it to
// a packageCounter (see newPackageCounter).
func newPackageWriter(npmTotal int, report func(PackageProgress)) *packageWriter {
	return &packageWriter{c: newPackageCounter(npmTotal, report)}
}

func (w *packageWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.c.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	// The lines counted are short; a longer one is dropped rather than
	// kept growing.
	if len(w.partial) > maxStageLine {
		w.partial = nil
	}
	return len(p), nil
}
