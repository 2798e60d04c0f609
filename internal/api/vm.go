package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// VM endpoints. {ref} is a VM name, id or unique id prefix.
const (
	PathVM        = "/v1/vms/{ref}"
	PathVMStart   = "/v1/vms/{ref}/start"
	PathVMStop    = "/v1/vms/{ref}/stop"
	PathVMRestart = "/v1/vms/{ref}/restart"
	PathVMPause   = "/v1/vms/{ref}/pause"
	PathVMResume  = "/v1/vms/{ref}/resume"
	PathVMSuspend = "/v1/vms/{ref}/suspend"
	PathWarm      = "/v1/warm"
	PathVMLogs    = "/v1/vms/{ref}/logs"
	PathVMHealth  = "/v1/vms/{ref}/health"
	PathVMPorts   = "/v1/vms/{ref}/ports"
	PathVMExec    = "/v1/vms/{ref}/exec"
	PathVMFiles   = "/v1/vms/{ref}/files"
	PathVMSSH     = "/v1/vms/{ref}/ssh"
)

// VM is what the daemon reports about one VM.
type VM struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	State     string    `json:"state"` // creating | running | paused | suspended | stopped | failed
	ImageID   string    `json:"image_id"`
	ImageName string    `json:"image_name"` // "" when the image is gone
	VMM       string    `json:"vmm"`
	Spec      VMSpec    `json:"spec"`
	IP        string    `json:"ip,omitempty"`
	MAC       string    `json:"mac,omitempty"`
	DNSName   string    `json:"dns_name"`
	CID       uint32    `json:"cid,omitempty"`
	PID       int       `json:"pid,omitempty"` // VMM process, when running
	Dir       string    `json:"dir"`
	Console   string    `json:"console_log"`
	LastError string    `json:"last_error,omitempty"`
	Net       NetPolicy `json:"net"`
	// NetDenied counts the flows the egress policy refused since the
	// daemon started (see NetStatus).
	NetDenied uint64    `json:"net_denied,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

// DeleteVMRequest asks to delete a VM; Force removes the record even when
// teardown fails.
type DeleteVMRequest struct {
	Force bool `json:"force,omitempty"`
}

// Health is the guest agent's health report, as relayed by the daemon.
type Health struct {
	AgentVersion string    `json:"agent_version"`
	BootID       string    `json:"boot_id"`
	Hostname     string    `json:"hostname"`
	Uptime       float64   `json:"uptime_seconds"`
	Load         []float64 `json:"load,omitempty"`
	Systemd      string    `json:"systemd,omitempty"`
	MultiUser    bool      `json:"multi_user"`
}

// Port is a listening socket in the guest.
type Port struct {
	Proto   string `json:"proto"` // tcp | udp | tcp6 | udp6
	Address string `json:"address"`
	Port    int    `json:"port"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

// ExecRequest starts a command in the guest; the connection then carries
// stream frames (stdin, stdout, stderr, resize, signal, exit).
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
}

// SSHInfo is what `banger vm ssh` needs to run the system ssh client.
type SSHInfo struct {
	Name       string   `json:"name"`
	IP         string   `json:"ip"`
	Alias      string   `json:"alias"` // host-key alias in KnownHosts
	KeyPath    string   `json:"key_path"`
	KnownHosts string   `json:"known_hosts"`
	Args       []string `json:"args"` // ssh arguments up to and including root@IP
}

func vmPath(pattern, ref string) string {
	return strings.Replace(pattern, "{ref}", url.PathEscape(ref), 1)
}

// CreateVM starts a create operation.
func (c *Client) CreateVM(ctx context.Context, req CreateVMRequest) (OperationRef, error) {
	var ref OperationRef
	err := c.Do(ctx, http.MethodPost, PathVMs, req, &ref)
	return ref, err
}

// ListVMs returns every VM.
func (c *Client) ListVMs(ctx context.Context) ([]VM, error) {
	var out []VM
	err := c.Do(ctx, http.MethodGet, PathVMs, nil, &out)
	return out, err
}

// GetVM returns one VM by name, id or id prefix.
func (c *Client) GetVM(ctx context.Context, ref string) (VM, error) {
	var out VM
	err := c.Do(ctx, http.MethodGet, vmPath(PathVM, ref), nil, &out)
	return out, err
}

// StartVMRequest is the optional body of a start. Cold boots a suspended
// VM from its disks and discards its saved memory instead of restoring it.
type StartVMRequest struct {
	Cold bool `json:"cold,omitempty"`
}

// StartVM starts a start operation.
func (c *Client) StartVM(ctx context.Context, ref string, req StartVMRequest) (OperationRef, error) {
	var out OperationRef
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMStart, ref), req, &out)
	return out, err
}

// WarmTemplate is an image's warm template for one machine shape: a guest
// booted once to agent ready and saved, from which `vm create` and `vm run`
// restore new VMs instead of booting them.
type WarmTemplate struct {
	Image      string    `json:"image"`
	ImageID    string    `json:"image_id"`
	VMM        string    `json:"vmm"`
	Spec       VMSpec    `json:"spec"`
	StateBytes int64     `json:"state_bytes"`
	CreatedAt  time.Time `json:"created_at"`
}

// Warm starts an operation that makes (or remakes) the warm template of
// req's image and shape (req.Name is ignored).
func (c *Client) Warm(ctx context.Context, req CreateVMRequest) (OperationRef, error) {
	var out OperationRef
	err := c.Do(ctx, http.MethodPost, PathWarm, req, &out)
	return out, err
}

// PauseVM stops a running VM's vCPUs and returns it.
func (c *Client) PauseVM(ctx context.Context, ref string) (VM, error) {
	var out VM
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMPause, ref), nil, &out)
	return out, err
}

// ResumeVM starts an operation that lets a paused VM run again or
// restores a suspended one.
func (c *Client) ResumeVM(ctx context.Context, ref string) (OperationRef, error) {
	var out OperationRef
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMResume, ref), nil, &out)
	return out, err
}

// SuspendVM starts an operation that saves a VM's memory and device state
// to its directory and ends its VMM.
func (c *Client) SuspendVM(ctx context.Context, ref string) (OperationRef, error) {
	var out OperationRef
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMSuspend, ref), nil, &out)
	return out, err
}

// RestartVM starts a restart operation.
func (c *Client) RestartVM(ctx context.Context, ref string) (OperationRef, error) {
	var out OperationRef
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMRestart, ref), nil, &out)
	return out, err
}

// StopVM stops a VM and returns it.
func (c *Client) StopVM(ctx context.Context, ref string) (VM, error) {
	var out VM
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMStop, ref), nil, &out)
	return out, err
}

// DeleteVM deletes a VM.
func (c *Client) DeleteVM(ctx context.Context, ref string, force bool) error {
	return c.Do(ctx, http.MethodDelete, vmPath(PathVM, ref), DeleteVMRequest{Force: force}, nil)
}

// VMHealth asks the VM's agent for its health.
func (c *Client) VMHealth(ctx context.Context, ref string) (Health, error) {
	var out Health
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMHealth, ref), nil, &out)
	return out, err
}

// VMPorts lists the guest's listening sockets.
func (c *Client) VMPorts(ctx context.Context, ref string) ([]Port, error) {
	var out []Port
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMPorts, ref), nil, &out)
	return out, err
}

// VMSSH returns how to ssh into the VM.
func (c *Client) VMSSH(ctx context.Context, ref string) (SSHInfo, error) {
	var out SSHInfo
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMSSH, ref), nil, &out)
	return out, err
}

// VMLogs streams the VM's console log; with follow it keeps streaming.
func (c *Client) VMLogs(ctx context.Context, ref string, follow bool) (io.ReadCloser, error) {
	p := vmPath(PathVMLogs, ref)
	if follow {
		p += "?follow=1"
	}
	return c.Stream(ctx, http.MethodGet, p, nil)
}

// Exec starts a command in the guest and returns the upgraded connection
// carrying stream frames.
func (c *Client) Exec(ctx context.Context, ref string, req ExecRequest) (net.Conn, error) {
	return c.Upgrade(ctx, http.MethodPost, vmPath(PathVMExec, ref), req)
}

// UploadFiles extracts a tar stream into dir in the guest.
func (c *Client) UploadFiles(ctx context.Context, ref, dir string, tarStream io.Reader) error {
	p := vmPath(PathVMFiles, ref) + "?dir=" + url.QueryEscape(dir)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+defaultDaemonAddress+p, tarStream)
	if err != nil {
		return err
	}
	stampCaller(req)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := c.http().Do(req)
	if err != nil {
		var de *DialError
		if errors.As(err, &de) {
			return de
		}
		return fmt.Errorf("upload to %s: %w", dir, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return ReadError(resp)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// DownloadFiles returns a tar stream of path (file or directory) in the guest.
func (c *Client) DownloadFiles(ctx context.Context, ref, path string) (io.ReadCloser, error) {
	p := vmPath(PathVMFiles, ref) + "?path=" + url.QueryEscape(path)
	return c.Stream(ctx, http.MethodGet, p, nil)
}
