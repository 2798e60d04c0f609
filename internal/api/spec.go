package api

import (
	"banger/internal/units"
	"errors"
	"fmt"
)

// Limits of a VMSpec. They are the same whichever way a spec is asked
// for (CLI flags, the TUI's form, [vm_defaults] in the config, the
// daemon's API), so they live here, next to the type, and VMSpec.Validate
// is the one check of them.
const (
	MaxVCPU      = 32      // most vCPUs a VM may have (the fewest is 1)
	MinMemoryMiB = 256     // least memory a VM may have, in MiB
	MinDiskBytes = 1 << 30 // smallest work disk a VM may have, in bytes
)

// SpecField names a field of VMSpec in neutral words, the ones a SpecError
// uses unless the caller renames it (see NameSpecField).
type SpecField string

// The fields of a VMSpec.
const (
	SpecVCPU   SpecField = "vcpu"
	SpecMemory SpecField = "memory"
	SpecDisk   SpecField = "disk size"
)

// SpecError is a VMSpec field outside its limits. It is typed so that each
// surface can name the field the way its user knows it (a CLI flag, a
// form field, a config key) while the rule keeps one wording.
type SpecError struct {
	Field SpecField // which field
	Rule  string    // what the value must be: "must be between 1 and 32"
	Got   string    // the value given, in the rule's unit: "0", "128 MiB", "512M"
	// Name is how the reader knows the field ("--vcpu"); empty means
	// Field.
	Name string
}

// Error reads "vcpu must be between 1 and 32, got 0".
func (e *SpecError) Error() string {
	name := e.Name
	if name == "" {
		name = string(e.Field)
	}
	return fmt.Sprintf("%s %s, got %s", name, e.Rule, e.Got)
}

// NameSpecField returns err with the field of a *SpecError in it called
// by names[field] (a flag, a form label); any other error, or a field
// names lacks, comes back unchanged.
func NameSpecField(err error, names map[SpecField]string) error {
	var se *SpecError
	if !errors.As(err, &se) || names[se.Field] == "" {
		return err
	}
	named := *se
	named.Name = names[se.Field]
	return &named
}

// Validate checks s against the limits every VM has (MaxVCPU,
// MinMemoryMiB, MinDiskBytes) and returns a *SpecError for the first field
// outside them. Limits that depend on the host (its memory, its free disk
// space) are the daemon's to check.
func (s VMSpec) Validate() error {
	switch {
	case s.VCPU < 1 || s.VCPU > MaxVCPU:
		return &SpecError{Field: SpecVCPU, Rule: fmt.Sprintf("must be between 1 and %d", MaxVCPU), Got: fmt.Sprint(s.VCPU)}
	case s.MemoryMiB < MinMemoryMiB:
		return &SpecError{Field: SpecMemory, Rule: fmt.Sprintf("must be at least %d MiB", MinMemoryMiB), Got: fmt.Sprintf("%d MiB", s.MemoryMiB)}
	case s.DiskBytes < MinDiskBytes:
		return &SpecError{Field: SpecDisk, Rule: "must be at least " + units.FormatSize(MinDiskBytes), Got: units.FormatSize(s.DiskBytes)}
	}
	return nil
}
