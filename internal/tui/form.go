package tui

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"banger/internal/api"
	"banger/internal/units"
	"banger/internal/vmname"
)

// Create-form fields, in tab order.
const (
	fieldName = iota
	fieldImage
	fieldVCPU
	fieldMemory
	fieldDisk
	numFields
)

var fieldLabels = [numFields]string{"name", "image", "vcpu", "memory MiB", "disk"}

// createForm is the small create dialog: one text field per field,
// pre-filled with the resolved defaults.
type createForm struct {
	inputs [numFields]field
	focus  int
	vmm    string
	err    string
}

// field is a one-line text input edited at its end: typing appends,
// backspace removes the last character, ctrl+u clears it.
type field struct {
	value       string
	placeholder string
}

// maxFieldLen bounds a field (a DNS label is at most 63 bytes).
const maxFieldLen = 63

func (f *field) update(k tea.KeyMsg) {
	switch k.Type {
	case tea.KeyBackspace:
		if r := []rune(f.value); len(r) > 0 {
			f.value = string(r[:len(r)-1])
		}
	case tea.KeyCtrlU:
		f.value = ""
	case tea.KeyRunes, tea.KeySpace:
		for _, r := range k.Runes {
			if len(f.value) < maxFieldLen && r >= ' ' {
				f.value += string(r)
			}
		}
	}
}

// view renders the field with a cursor block when focused.
func (f field) view(focused bool) string {
	v := f.value
	if v == "" && !focused {
		return "(" + f.placeholder + ")"
	}
	if focused {
		v += "_"
	}
	return v
}

func newCreateForm(d CreateDefaults) *createForm {
	f := &createForm{vmm: d.VMM}
	vals := [numFields]string{d.Name, d.Image, itoaOrEmpty(d.VCPU), itoaOrEmpty(d.MemoryMiB), ""}
	if d.DiskBytes > 0 {
		vals[fieldDisk] = units.FormatSize(d.DiskBytes)
	}
	for i := range f.inputs {
		f.inputs[i].value = vals[i]
	}
	f.inputs[fieldName].placeholder = "generated"
	f.inputs[fieldImage].placeholder = "default image"
	return f
}

func itoaOrEmpty(n int) string {
	if n <= 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// move changes the focused field by delta, wrapping around.
func (f *createForm) move(delta int) {
	f.focus = (f.focus + delta + numFields) % numFields
}

// update passes a key to the focused field.
func (f *createForm) update(k tea.KeyMsg) {
	f.inputs[f.focus].update(k)
	f.err = ""
}

// value returns a field's trimmed text.
func (f *createForm) value(i int) string { return strings.TrimSpace(f.inputs[i].value) }

// specFields are the form fields holding a VM spec's fields, so that a
// field api.VMSpec.Validate refuses gets the focus.
var specFields = map[api.SpecField]int{api.SpecVCPU: fieldVCPU, api.SpecMemory: fieldMemory, api.SpecDisk: fieldDisk}

// request validates the fields with the same check as `banger vm create`
// (api.VMSpec.Validate) and builds the request; a refused spec field gets
// the focus.
func (f *createForm) request() (api.CreateVMRequest, error) {
	name := f.value(fieldName)
	if name != "" {
		if err := vmname.Validate(name); err != nil {
			return api.CreateVMRequest{}, err
		}
	}
	vcpu, err := strconv.Atoi(f.value(fieldVCPU))
	if err != nil {
		return api.CreateVMRequest{}, fmt.Errorf("vcpu %q: want a whole number", f.value(fieldVCPU))
	}
	mem, err := strconv.Atoi(f.value(fieldMemory))
	if err != nil {
		return api.CreateVMRequest{}, fmt.Errorf("memory %q: want a whole number of MiB", f.value(fieldMemory))
	}
	disk, err := units.ParseSize(f.value(fieldDisk))
	if err != nil {
		return api.CreateVMRequest{}, fmt.Errorf("disk: %w", err)
	}
	spec := api.VMSpec{VCPU: vcpu, MemoryMiB: mem, DiskBytes: disk}
	if err := spec.Validate(); err != nil {
		var se *api.SpecError
		if errors.As(err, &se) {
			f.focus = specFields[se.Field]
		}
		return api.CreateVMRequest{}, err
	}
	return api.CreateVMRequest{
		Name:  name,
		Image: f.value(fieldImage),
		VMM:   f.vmm,
		Spec:  spec,
	}, nil
}
