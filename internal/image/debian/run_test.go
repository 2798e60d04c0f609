package debian

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"banger/internal/cmdrun"
)

func TestStageWriter_MarkersAcrossWrites(t *testing.T) {
	var got []string
	sw := &stageWriter{seen: map[string]bool{}, progress: func(stage string, done, total int64) {
		got = append(got, stage+":"+string(rune('0'+done)))
	}}
	for _, chunk := range []string{"noise\n  banger-st", "age: " + StageInitramfs, "\nbanger-stage: " + StageInitramfs + "\n", "banger-stage: x"} {
		sw.Write([]byte(chunk))
	}
	// The unterminated marker is not reported yet, the repeated one never.
	if want := []string{StageBootstrap + ":1", StageInitramfs + ":0"}; !slices.Equal(got, want) {
		t.Errorf("progress = %v, want %v", got, want)
	}
}

func TestRun_ErrorKeepsArgvAndOutput(t *testing.T) {
	var log bytes.Buffer
	err := Run(context.Background(), &log, "sh", "-c", `echo "$DEBIAN_FRONTEND"; echo broken >&2; exit 4`)
	var e *cmdrun.Error
	if !errors.As(err, &e) || e.ExitCode() != 4 {
		t.Fatalf("Run = %v, want a *cmdrun.Error with exit code 4", err)
	}
	if !strings.Contains(err.Error(), "sh -c") || !strings.Contains(err.Error(), "noninteractive\nbroken") {
		t.Errorf("error %q lacks the argv or the output", err)
	}
	if !strings.HasPrefix(log.String(), "+ sh -c ") || !strings.Contains(log.String(), "broken") {
		t.Errorf("log = %q, want the command line and its output", log.String())
	}
}
