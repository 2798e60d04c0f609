package daemon

import (
	"context"
	"net/http"

	"banger/internal/api"
	"banger/internal/operation"
	"banger/internal/vmctl"
)

// snapshotRoutes are the named snapshot and fork endpoints.
func (d *Daemon) snapshotRoutes() []Route {
	return []Route{
		{"POST " + api.PathVMSnapshots, d.handleTakeSnapshot},
		{"GET " + api.PathVMSnapshots, d.handleListSnapshots},
		{"GET " + api.PathSnapshots, d.handleListSnapshots},
		{"DELETE " + api.PathVMSnapshot, d.handleDeleteSnapshot},
		{"POST " + api.PathVMFork, d.handleForkVM},
	}
}

// snapshotView renders a snapshot for the API.
func (d *Daemon) snapshotView(ctx context.Context, s vmctl.Snapshot) api.Snapshot {
	v := api.Snapshot{
		Ref: s.VM.Name + "@" + s.Name, VM: s.VM.Name, VMID: s.VM.ID, Name: s.Name,
		ImageID: s.ImageID, VMM: s.VMM,
		Spec:       api.VMSpec{VCPU: s.VCPU, MemoryMiB: s.MemoryMiB, DiskBytes: s.DiskBytes},
		StateBytes: s.StateBytes, Sessions: s.Sessions, CreatedAt: s.CreatedAt,
	}
	if img, err := d.Store.GetImage(ctx, s.ImageID); err == nil {
		v.Image = img.Name
	}
	return v
}

func (d *Daemon) handleTakeSnapshot(w http.ResponseWriter, r *http.Request) error {
	var req api.SnapshotRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	ref := r.PathValue("ref")
	if _, err := d.Store.GetVM(r.Context(), ref); err != nil {
		return err
	}
	op := d.Ops.Start("vm.snapshot", func(ctx context.Context, op *operation.Op) (any, error) {
		s, err := d.VMs.TakeSnapshot(ctx, op, ref, req.Name)
		if err != nil {
			return nil, err
		}
		return d.snapshotView(context.WithoutCancel(ctx), s), nil
	})
	return writeJSON(w, http.StatusAccepted, op.Ref())
}

func (d *Daemon) handleListSnapshots(w http.ResponseWriter, r *http.Request) error {
	snaps, err := d.VMs.Snapshots(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	out := make([]api.Snapshot, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, d.snapshotView(r.Context(), s))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleDeleteSnapshot(w http.ResponseWriter, r *http.Request) error {
	if err := d.VMs.DeleteSnapshot(r.Context(), r.PathValue("ref")+"@"+r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (d *Daemon) handleForkVM(w http.ResponseWriter, r *http.Request) error {
	var req api.ForkRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	ref := r.PathValue("ref")
	if _, err := d.Store.GetVM(r.Context(), ref); err != nil {
		return err
	}
	op := d.Ops.Start("vm.fork", func(ctx context.Context, op *operation.Op) (any, error) {
		copies, err := d.VMs.Fork(ctx, op, ref, req.Count, req.Prefix)
		if err != nil {
			return nil, err
		}
		out := make([]api.VM, 0, len(copies))
		for _, c := range copies {
			out = append(out, d.vmView(context.WithoutCancel(ctx), c))
		}
		return out, nil
	})
	return writeJSON(w, http.StatusAccepted, op.Ref())
}
