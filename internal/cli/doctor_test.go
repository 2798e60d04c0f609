package cli

import (
	"bytes"
	"strings"
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

// TestMain_DoctorWithoutDaemon: when bangerd cannot be started, doctor
// still reports the checks it makes in process and exits 1.
func TestMain_DoctorWithoutDaemon(t *testing.T) {
	e := newEnv(t)
	t.Setenv(EnvBangerdBin, "/nonexistent/bangerd")
	e.writeConfig(t, "vmm = \"bhyve\"\n")
	out, _, code := runMain(t, "doctor")
	if code != 1 || !strings.HasPrefix(out, "fail config") || !strings.Contains(out, "fail bangerd  cannot ask bangerd for the host checks") || !strings.Contains(out, "fix: see `banger daemon logs`") {
		t.Errorf("doctor without a daemon: exit %d\n%s", code, out)
	}
}
