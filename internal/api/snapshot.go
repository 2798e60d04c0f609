package api

import (
	"context"
	"net/http"
	"time"
)

// Snapshot and fork endpoints. {ref} is a VM reference, {name} a
// snapshot name.
const (
	PathVMSnapshots = "/v1/vms/{ref}/snapshots"
	PathVMSnapshot  = "/v1/vms/{ref}/snapshots/{name}"
	PathSnapshots   = "/v1/snapshots"
	PathVMFork      = "/v1/vms/{ref}/fork"
)

// Snapshot is a VM's named snapshot: memory, device state and disks at
// one instant. New VMs are made from it with CreateVMRequest.From = Ref.
type Snapshot struct {
	Ref        string    `json:"ref"` // VM@NAME
	VM         string    `json:"vm"`
	VMID       string    `json:"vm_id"`
	Name       string    `json:"name"`
	Image      string    `json:"image,omitempty"`
	ImageID    string    `json:"image_id,omitempty"`
	VMM        string    `json:"vmm,omitempty"`
	Spec       VMSpec    `json:"spec"`
	StateBytes int64     `json:"state_bytes"`
	Sessions   int       `json:"sessions"`
	CreatedAt  time.Time `json:"created_at"`
}

// SnapshotRequest is the body of a snapshot; an empty Name picks snap-N.
type SnapshotRequest struct {
	Name string `json:"name,omitempty"`
}

// ForkRequest asks for Count live copies of a running VM, named
// PREFIX-1 to PREFIX-Count (Prefix defaults to the VM's name). The
// operation's result is the list of copies ([]VM).
type ForkRequest struct {
	Count  int    `json:"count"`
	Prefix string `json:"prefix,omitempty"`
}

// TakeSnapshot starts an operation that snapshots the running VM ref; its
// result is a Snapshot.
func (c *Client) TakeSnapshot(ctx context.Context, ref string, req SnapshotRequest) (OperationRef, error) {
	var out OperationRef
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMSnapshots, ref), req, &out)
	return out, err
}

// ListSnapshots returns the snapshots of the VM ref, or of every VM when
// ref is empty.
func (c *Client) ListSnapshots(ctx context.Context, ref string) ([]Snapshot, error) {
	path := PathSnapshots
	if ref != "" {
		path = vmPath(PathVMSnapshots, ref)
	}
	var out []Snapshot
	err := c.Do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// DeleteSnapshot removes the snapshot name of the VM ref.
func (c *Client) DeleteSnapshot(ctx context.Context, ref, name string) error {
	return c.Do(ctx, http.MethodDelete, sessionPath(PathVMSnapshot, ref, name), nil, nil)
}

// ForkVM starts an operation that makes live copies of the running VM
// ref; its result is the copies ([]VM).
func (c *Client) ForkVM(ctx context.Context, ref string, req ForkRequest) (OperationRef, error) {
	var out OperationRef
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMFork, ref), req, &out)
	return out, err
}
