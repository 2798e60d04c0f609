package api

import (
	"errors"
	"fmt"
	"testing"
)

func TestVMSpec_Validate(t *testing.T) {
	ok := VMSpec{VCPU: 2, MemoryMiB: 2048, DiskBytes: 8 << 30}
	with := func(f func(*VMSpec)) VMSpec { s := ok; f(&s); return s }
	for _, tc := range []struct {
		name  string
		spec  VMSpec
		field SpecField // "" means valid
		want  string
	}{
		{"valid", ok, "", ""},
		{"at the limits", VMSpec{VCPU: MaxVCPU, MemoryMiB: MinMemoryMiB, DiskBytes: MinDiskBytes}, "", ""},
		{"one vcpu", with(func(s *VMSpec) { s.VCPU = 1 }), "", ""},
		{"zero vcpu", with(func(s *VMSpec) { s.VCPU = 0 }), SpecVCPU, "vcpu must be between 1 and 32, got 0"},
		{"negative vcpu", with(func(s *VMSpec) { s.VCPU = -1 }), SpecVCPU, "vcpu must be between 1 and 32, got -1"},
		{"too many vcpu", with(func(s *VMSpec) { s.VCPU = MaxVCPU + 1 }), SpecVCPU, "vcpu must be between 1 and 32, got 33"},
		{"memory below floor", with(func(s *VMSpec) { s.MemoryMiB = MinMemoryMiB - 1 }), SpecMemory, "memory must be at least 256 MiB, got 255 MiB"},
		{"zero memory", with(func(s *VMSpec) { s.MemoryMiB = 0 }), SpecMemory, "memory must be at least 256 MiB, got 0 MiB"},
		{"disk below floor", with(func(s *VMSpec) { s.DiskBytes = 512 << 20 }), SpecDisk, "disk size must be at least 1G, got 512M"},
		{"disk odd bytes", with(func(s *VMSpec) { s.DiskBytes = 4097 }), SpecDisk, "disk size must be at least 1G, got 4097"},
		{"zero disk", with(func(s *VMSpec) { s.DiskBytes = 0 }), SpecDisk, "disk size must be at least 1G, got 0"},
		{"first bad field wins", VMSpec{}, SpecVCPU, "vcpu must be between 1 and 32, got 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var se *SpecError
			if !errors.As(err, &se) || se.Field != tc.field || err.Error() != tc.want {
				t.Fatalf("Validate() = %v (%T), want *SpecError on %q: %q", err, err, tc.field, tc.want)
			}
		})
	}
}

func TestNameSpecField(t *testing.T) {
	names := map[SpecField]string{SpecVCPU: "--vcpu", SpecDisk: "--disk-size"}
	err := NameSpecField(VMSpec{MemoryMiB: 512, DiskBytes: 1 << 30}.Validate(), names)
	if got, want := err.Error(), "--vcpu must be between 1 and 32, got 0"; got != want {
		t.Errorf("named vcpu error = %q, want %q", got, want)
	}
	var se *SpecError
	if !errors.As(err, &se) || se.Field != SpecVCPU {
		t.Errorf("named error %v lost its *SpecError", err)
	}
	// A field the map lacks keeps its neutral name.
	err = NameSpecField(VMSpec{VCPU: 1, DiskBytes: 1 << 30}.Validate(), names)
	if got, want := err.Error(), "memory must be at least 256 MiB, got 0 MiB"; got != want {
		t.Errorf("unnamed memory error = %q, want %q", got, want)
	}
	other := fmt.Errorf("not a spec error")
	if NameSpecField(other, names) != other {
		t.Errorf("NameSpecField changed an error that is not a *SpecError")
	}
	if NameSpecField(nil, names) != nil {
		t.Errorf("NameSpecField(nil) != nil")
	}
}
