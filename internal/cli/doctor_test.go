package cli

import (
	"bytes"
	"testing"

	"banger/internal/api"
)

func TestRenderDoctor(t *testing.T) {
	rep := api.DoctorReport{Checks: []api.DoctorCheck{
		{Name: "kvm", Status: api.CheckWarn, Detail: "TCG only: no vmx", Fix: "enable it"},
		{Name: "vm defaults", Status: api.CheckOK, Detail: "2 vcpu (auto)", Fix: "ignored for ok"},
		{Name: "disk", Status: api.CheckFail, Detail: "1 GiB free", Fix: "free space"},
	}}
	var buf bytes.Buffer
	renderDoctor(&buf, rep)
	want := "" +
		"warn kvm          TCG only: no vmx\n" +
		"                  fix: enable it\n" +
		"ok   vm defaults  2 vcpu (auto)\n" +
		"fail disk         1 GiB free\n" +
		"                  fix: free space\n"
	if buf.String() != want {
		t.Errorf("renderDoctor:\n%s\nwant:\n%s", buf.String(), want)
	}
}
