package api

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEvent_ProgressRoundTrip(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	sent := []Event{
		{Seq: 1, Time: at, Type: EventStage, Op: "op-1", StageIndex: 0, Stage: &Stage{
			Name: "fetch", State: StageRunning, Started: at,
			Progress: &Progress{Done: 12 << 20, Total: 27 << 20, Unit: UnitBytes},
		}},
		{Seq: 2, Time: at, Type: EventStage, Op: "op-1", StageIndex: 1, Stage: &Stage{
			Name: "count", State: StageRunning, Started: at,
			Progress: &Progress{Done: 3, Total: 0},
		}},
		{Seq: 3, Time: at, Type: EventDone, Op: "op-1", State: OpSucceeded},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, ev := range sent {
		if err := enc.Encode(ev); err != nil {
			t.Fatal(err)
		}
	}
	wire := buf.String()
	if !strings.Contains(wire, `"progress":{"done":12582912,"total":28311552,"unit":"bytes"}`) {
		t.Errorf("wire form of a byte progress:\n%s", wire)
	}
	if !strings.Contains(wire, `"progress":{"done":3,"total":0}`) {
		t.Errorf("a plain count carries no unit:\n%s", wire)
	}
	r := NewEventReader(io.NopCloser(&buf))
	var got []Event
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, ev)
	}
	if d := cmp.Diff(sent, got); d != "" {
		t.Errorf("events after the round trip (-sent +got):\n%s", d)
	}
}
