// Package fcapi is a small typed client for the Firecracker HTTP API on
// its unix socket, covering only the calls banger makes. Its types follow
// the OpenAPI document of Firecracker v1.16.1 (testdata of the parent
// package), field names and json tags exactly as there, every optional
// field omitted when unset.
//
// It is written by hand because the only Go SDK for Firecracker speaks API
// 1.0 and cannot express what banger needs today (the entropy device, the
// mem_backend and override fields of a snapshot load), while the subset
// banger uses is a dozen small calls that the standard library serves
// well. A test checks every request the client can send against the
// pinned document.
package fcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout bounds one API call when the caller's context has no
// earlier deadline.
const DefaultTimeout = 10 * time.Second

// Client calls the Firecracker API on one unix socket. Each request uses a
// connection of its own that is closed afterwards, so no connection is
// left open to a VMM that outlives the caller.
type Client struct {
	socket  string
	timeout time.Duration
	http    *http.Client
}

// New returns a client for the API socket at socket.
func New(socket string) *Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, timeout: DefaultTimeout, http: &http.Client{Transport: tr}}
}

// WithTimeout returns a copy of c whose calls are each bounded by d.
func (c *Client) WithTimeout(d time.Duration) *Client {
	cc := *c
	cc.timeout = d
	return &cc
}

// Socket returns the API socket path c talks to.
func (c *Client) Socket() string { return c.socket }

// Error is a Firecracker API call that did not succeed: the request, the
// HTTP status and Firecracker's fault_message.
type Error struct {
	Method string
	Path   string
	Status int
	// FaultMessage is Firecracker's description of the error (or the raw
	// body when it sent no fault_message).
	FaultMessage string
}

func (e *Error) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.FaultMessage)
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// do sends one request with body (nil for none) and decodes a 2xx answer
// into out (nil to discard).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("firecracker %s %s: encode: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s on %s: %w", method, path, c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(method, path, resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("firecracker %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// decodeError builds an *Error from a non-2xx answer.
func decodeError(method, path string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Method: method, Path: path, Status: resp.StatusCode}
	var fault struct {
		FaultMessage *string `json:"fault_message"`
	}
	if json.Unmarshal(b, &fault) == nil && fault.FaultMessage != nil {
		e.FaultMessage = *fault.FaultMessage
	} else {
		e.FaultMessage = strings.TrimSpace(string(b))
	}
	return e
}

// IsFault reports whether err is an *Error, that is Firecracker answered
// and refused, as opposed to a transport failure.
func IsFault(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// DescribeInstance returns general information about the instance (GET /).
func (c *Client) DescribeInstance(ctx context.Context) (InstanceInfo, error) {
	var out InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &out)
	return out, err
}

// Version returns the Firecracker version (GET /version).
func (c *Client) Version(ctx context.Context) (FirecrackerVersion, error) {
	var out FirecrackerVersion
	err := c.do(ctx, http.MethodGet, "/version", nil, &out)
	return out, err
}

// PutMachineConfig sets vCPUs and memory (PUT /machine-config). Pre-boot.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfiguration) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// PutBootSource sets the kernel, initrd and command line (PUT
// /boot-source). Pre-boot.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive adds or updates the drive d.DriveID (PUT /drives/{drive_id}).
// Pre-boot.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PutNetworkInterface adds the interface n.IfaceID (PUT
// /network-interfaces/{iface_id}). Pre-boot.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutVsock adds the vsock device (PUT /vsock); Firecracker binds uds_path
// at once. Pre-boot.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutEntropy adds the virtio-rng entropy device (PUT /entropy). Pre-boot.
func (c *Client) PutEntropy(ctx context.Context, e EntropyDevice) error {
	return c.do(ctx, http.MethodPut, "/entropy", e, nil)
}

// PutLogger sends Firecracker's log to a file (PUT /logger). Pre-boot,
// once.
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// PutMetrics sends Firecracker's metrics to a file (PUT /metrics).
// Pre-boot, once.
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", m, nil)
}

// Action performs a synchronous action (PUT /actions).
func (c *Client) Action(ctx context.Context, t ActionType) error {
	return c.do(ctx, http.MethodPut, "/actions", InstanceActionInfo{ActionType: t}, nil)
}

// InstanceStart boots the configured microVM (PUT /actions InstanceStart).
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.Action(ctx, ActionInstanceStart)
}

// SendCtrlAltDel presses Ctrl-Alt-Del in the guest (PUT /actions
// SendCtrlAltDel).
func (c *Client) SendCtrlAltDel(ctx context.Context) error {
	return c.Action(ctx, ActionSendCtrlAltDel)
}

// PatchVM pauses or resumes the guest (PATCH /vm). Post-boot.
func (c *Client) PatchVM(ctx context.Context, state VMState) error {
	return c.do(ctx, http.MethodPatch, "/vm", VM{State: state}, nil)
}

// CreateSnapshot writes a snapshot of the paused microVM (PUT
// /snapshot/create). Post-boot.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreateParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", p, nil)
}

// LoadSnapshot loads a snapshot into a fresh process (PUT /snapshot/load);
// only the logger and metrics may be configured before.
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoadParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", p, nil)
}
