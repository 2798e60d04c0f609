package cli

import (
	"errors"
	"testing"

	"banger/internal/api"
)

func TestVMFlags_request_specErrorsNameFlags(t *testing.T) {
	for _, tc := range []struct {
		f     vmFlags
		field api.SpecField
		flag  string
	}{
		{vmFlags{vcpu: 0, memoryMiB: 512, diskSize: "8G", vmm: "auto"}, api.SpecVCPU, "--vcpu"},
		{vmFlags{vcpu: 1, memoryMiB: 64, diskSize: "8G", vmm: "auto"}, api.SpecMemory, "--memory"},
		{vmFlags{vcpu: 1, memoryMiB: 512, diskSize: "1M", vmm: "auto"}, api.SpecDisk, "--disk-size"},
	} {
		_, _, err := tc.f.request()
		var se *api.SpecError
		if !errors.As(err, &se) || se.Field != tc.field || se.Name != tc.flag {
			t.Errorf("request(%+v) = %v; want the shared spec check's error on %s, named %s", tc.f, err, tc.field, tc.flag)
		}
	}
}
