package tui

import (
	"errors"
	"testing"

	"banger/internal/api"
)

func TestCreateForm_request_specErrorFocusesField(t *testing.T) {
	f := newCreateForm(CreateDefaults{VCPU: 2, MemoryMiB: 2048, DiskBytes: 8 << 30})
	f.inputs[fieldMemory].value = "100"
	f.focus = fieldName
	_, err := f.request()
	var se *api.SpecError
	if !errors.As(err, &se) || se.Field != api.SpecMemory {
		t.Fatalf("request() = %v; want the shared spec check's error on memory", err)
	}
	if f.focus != fieldMemory {
		t.Errorf("focus = %d after a refused memory, want the memory field (%d)", f.focus, fieldMemory)
	}
}
