package cmdrun

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestError_KeepsArgvOutputAndExitCode(t *testing.T) {
	err := Run(context.Background(), "sh", "-c", "echo first; echo 'no such thing' >&2; exit 3")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Run = %v, want an *Error", err)
	}
	if got := strings.Join(e.Argv, " "); got != "sh -c echo first; echo 'no such thing' >&2; exit 3" {
		t.Errorf("Argv = %q", got)
	}
	if e.ExitCode() != 3 {
		t.Errorf("ExitCode = %d, want 3", e.ExitCode())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("errors.As(*exec.ExitError) fails through %T", err)
	}
	want := "sh -c echo first; echo 'no such thing' >&2; exit 3: exit status 3:\nfirst\nno such thing"
	if err.Error() != want {
		t.Errorf("Error() =\n%s\nwant\n%s", err, want)
	}
}

func TestError_OneLineOutput(t *testing.T) {
	err := Run(context.Background(), "sh", "-c", "echo '  denied  '; exit 1")
	if want := "sh -c echo '  denied  '; exit 1: exit status 1: denied"; err == nil || err.Error() != want {
		t.Errorf("Error() = %v, want %q", err, want)
	}
}

func TestError_OutputTailBounded(t *testing.T) {
	// 2000 numbered lines, far more than MaxOutput bytes.
	err := Run(context.Background(), "sh", "-c", `i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; exit 1`)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Run = %v, want an *Error", err)
	}
	if len(e.Output) > MaxOutput || !e.Truncated {
		t.Errorf("Output is %d bytes (truncated %v), want at most %d and truncated", len(e.Output), e.Truncated, MaxOutput)
	}
	if !bytes.HasPrefix(e.Output, []byte("line ")) {
		t.Errorf("tail does not start at a line: %q", e.Output[:20])
	}
	if !bytes.HasSuffix(e.Output, []byte("line 1999\n")) {
		t.Errorf("tail lacks the last line: %q", e.Output[len(e.Output)-20:])
	}
	if strings.Contains(err.Error(), "line 0\n") {
		t.Errorf("Error() kept the first line")
	}
	if !strings.Contains(err.Error(), ":\n...\nline ") {
		t.Errorf("Error() does not mark the cut: %.80q", err.Error())
	}
}

func TestTail_ManySmallWrites(t *testing.T) {
	var tl tail
	for i := 0; i < 10*MaxOutput; i++ {
		tl.Write([]byte{'a' + byte(i%26)})
	}
	b, cut := tl.bytes()
	if len(b) != MaxOutput || !cut {
		t.Fatalf("kept %d bytes (cut %v), want %d", len(b), cut, MaxOutput)
	}
	if last := b[len(b)-1]; last != 'a'+byte((10*MaxOutput-1)%26) {
		t.Errorf("last byte %q is not the last written", last)
	}
}

func TestError_NotStarted(t *testing.T) {
	err := Run(context.Background(), "/nonexistent/tool", "-x")
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run = %v, want an *Error wrapping ErrNotExist", err)
	}
	if e.ExitCode() != -1 || !strings.HasPrefix(err.Error(), "/nonexistent/tool -x: ") {
		t.Errorf("ExitCode %d, Error %q", e.ExitCode(), err)
	}
}

func TestOutput_CombinedEnvDirStdin(t *testing.T) {
	dir := t.TempDir()
	var log bytes.Buffer
	out, err := Cmd{
		Argv:  []string{"sh", "-c", `read x; echo "$x $CMDRUN_TEST $(pwd)"; echo err >&2`},
		Env:   []string{"CMDRUN_TEST=set"},
		Dir:   dir,
		Stdin: strings.NewReader("in\n"),
		Log:   &log,
	}.Output(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(dir)
	if want := "in set " + real + "\nerr\n"; string(out) != want || log.String() != want {
		t.Errorf("output %q, log %q; want %q", out, log.String(), want)
	}
}

func TestRun_Cancel(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Minute} {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		var started bytes.Buffer
		w := writerFunc(func(p []byte) (int, error) {
			if started.Len() == 0 {
				close(ready)
			}
			return started.Write(p)
		})
		errc := make(chan error, 1)
		// sleep dies of SIGTERM, so with a grace of a minute the test
		// ends quickly only if SIGTERM reaches the group.
		go func() {
			errc <- Cmd{Argv: []string{"sh", "-c", "echo up; exec sleep 60"}, Log: w, KillGrace: grace}.Run(ctx)
		}()
		<-ready
		cancel()
		err := <-errc
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, context.Canceled) {
			t.Errorf("grace %v: Run = %v, want an *Error wrapping context.Canceled", grace, err)
		}
	}
}

func TestRun_CancelledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, "true"); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestStdout_DataApartFromErrors(t *testing.T) {
	out, err := Cmd{Argv: []string{"sh", "-c", "echo data; echo noise >&2"}}.Stdout(context.Background())
	if err != nil || string(out) != "data\n" {
		t.Fatalf("Stdout = %q, %v; want only the standard output", out, err)
	}
	out, err = Cmd{Argv: []string{"sh", "-c", "echo partial; echo 'bad ref' >&2; exit 128"}}.Stdout(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.ExitCode() != 128 {
		t.Fatalf("Stdout = %v, want an *Error with exit 128", err)
	}
	if string(e.Output) != "bad ref\n" || string(out) != "partial\n" {
		t.Errorf("error output %q, stdout %q; want stderr in the error and stdout returned", e.Output, out)
	}
}
