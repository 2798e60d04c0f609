package api

import (
	"context"
	"net/http"
)

// PathDoctor runs the daemon's host checks (KVM, VMMs, tools, privilege,
// disk, default image, VM defaults) and returns their report.
const PathDoctor = "/v1/doctor"

// CheckStatus is the outcome of one doctor check.
type CheckStatus string

// Check outcomes. A fail means `vm run` would not work.
const (
	CheckOK   CheckStatus = "ok"
	CheckWarn CheckStatus = "warn"
	CheckFail CheckStatus = "fail"
)

// DoctorCheck is one line of a doctor report, with a fix hint when it is
// not ok.
type DoctorCheck struct {
	Name   string      `json:"name"`
	Status CheckStatus `json:"status"`
	Detail string      `json:"detail"`
	Fix    string      `json:"fix,omitempty"`
}

// DoctorReport is every check in order; OK is false when any failed.
type DoctorReport struct {
	Checks []DoctorCheck `json:"checks"`
	OK     bool          `json:"ok"`
}

// Doctor asks the daemon to check the host it runs on.
func (c *Client) Doctor(ctx context.Context) (DoctorReport, error) {
	var out DoctorReport
	err := c.Do(ctx, http.MethodGet, PathDoctor, nil, &out)
	return out, err
}
