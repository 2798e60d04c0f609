package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// VM states: State is what the daemon last observed, DesiredState what the
// user asked for (only StateRunning or StateStopped).
const (
	StateCreating = "creating"
	StateRunning  = "running"
	StateStopped  = "stopped"
	StateFailed   = "failed"
)

// VMM names accepted in VM.VMM.
const (
	VMMFirecracker = "firecracker"
	VMMQEMU        = "qemu"
)

// VM is the durable record of one VM: what it is, not which process or
// devices currently back it.
type VM struct {
	ID, Name, ImageID string
	VCPU, MemoryMiB   int
	DiskBytes         int64
	VMM               string // VMMFirecracker or VMMQEMU
	State             string // StateCreating, StateRunning, StateStopped, StateFailed
	DesiredState      string // StateRunning or StateStopped
	IP, MAC           string
	CID               uint32 // vsock guest CID (>= 3), unique among VMs; 0 = not assigned yet
	AgentToken        string
	LastError         string
	CreatedAt         time.Time
	UpdatedAt         time.Time
	StartedAt         time.Time // zero when never started
	NetPolicy         string    // egress.Policy.Encode; "" is open
}

const vmColumns = "id, name, image_id, vcpu, memory_mib, disk_bytes, vmm, state, desired_state, ip, mac, cid, agent_token, last_error, created_at, updated_at, started_at, net_policy"

func validateVM(vm VM) error {
	switch {
	case vm.ID == "":
		return fmt.Errorf("empty id: %w", ErrInvalid)
	case vm.Name == "":
		return fmt.Errorf("empty name: %w", ErrInvalid)
	case vm.VCPU <= 0:
		return fmt.Errorf("vcpu %d must be positive: %w", vm.VCPU, ErrInvalid)
	case vm.MemoryMiB <= 0:
		return fmt.Errorf("memory %d MiB must be positive: %w", vm.MemoryMiB, ErrInvalid)
	case vm.DiskBytes < 0:
		return fmt.Errorf("disk size %d must not be negative: %w", vm.DiskBytes, ErrInvalid)
	case vm.VMM != VMMFirecracker && vm.VMM != VMMQEMU:
		return fmt.Errorf("unknown vmm %q: %w", vm.VMM, ErrInvalid)
	case vm.State != StateCreating && vm.State != StateRunning && vm.State != StateStopped && vm.State != StateFailed:
		return fmt.Errorf("unknown state %q: %w", vm.State, ErrInvalid)
	case vm.DesiredState != StateRunning && vm.DesiredState != StateStopped:
		return fmt.Errorf("unknown desired state %q: %w", vm.DesiredState, ErrInvalid)
	case vm.CID != 0 && vm.CID < 3:
		return fmt.Errorf("vsock cid %d is reserved (must be >= 3): %w", vm.CID, ErrInvalid)
	}
	return nil
}

// cidArg stores an unassigned CID as NULL, so the UNIQUE constraint only
// applies to assigned ones.
func cidArg(cid uint32) any {
	if cid == 0 {
		return nil
	}
	return int64(cid)
}

// CreateVM records vm as given: it assigns no id, address or CID (see
// AllocateLease and AllocateCID). CreatedAt and UpdatedAt default to the
// store clock. A duplicate id, name or CID is ErrConflict.
func (s *Store) CreateVM(ctx context.Context, vm VM) error {
	if err := validateVM(vm); err != nil {
		return fmt.Errorf("create vm %q: %w", vm.Name, err)
	}
	now := s.now()
	if vm.CreatedAt.IsZero() {
		vm.CreatedAt = now
	}
	if vm.UpdatedAt.IsZero() {
		vm.UpdatedAt = vm.CreatedAt
	}
	err := s.write(ctx, func(tx *sql.Tx) error { return insertVM(ctx, tx, vm) })
	if err != nil {
		return fmt.Errorf("create vm %q: %w", vm.Name, err)
	}
	return nil
}

func insertVM(ctx context.Context, tx *sql.Tx, vm VM) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO vms ("+vmColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		vm.ID, vm.Name, vm.ImageID, vm.VCPU, vm.MemoryMiB, vm.DiskBytes, vm.VMM, vm.State, vm.DesiredState,
		vm.IP, vm.MAC, cidArg(vm.CID), vm.AgentToken, vm.LastError,
		formatTime(vm.CreatedAt), formatTime(vm.UpdatedAt), formatOptTime(vm.StartedAt), vm.NetPolicy)
	if isUnique(err) {
		return fmt.Errorf("vm name, id or cid already in use: %w", ErrConflict)
	}
	return err
}

func scanVM(row interface{ Scan(...any) error }) (VM, error) {
	var vm VM
	var cid sql.NullInt64
	var created, updated string
	var started sql.NullString
	err := row.Scan(&vm.ID, &vm.Name, &vm.ImageID, &vm.VCPU, &vm.MemoryMiB, &vm.DiskBytes, &vm.VMM, &vm.State, &vm.DesiredState,
		&vm.IP, &vm.MAC, &cid, &vm.AgentToken, &vm.LastError, &created, &updated, &started, &vm.NetPolicy)
	if err != nil {
		return VM{}, err
	}
	vm.CID = uint32(cid.Int64)
	if vm.CreatedAt, err = parseTime(created); err != nil {
		return VM{}, err
	}
	if vm.UpdatedAt, err = parseTime(updated); err != nil {
		return VM{}, err
	}
	if vm.StartedAt, err = parseOptTime(started); err != nil {
		return VM{}, err
	}
	return vm, nil
}

func getVM(ctx context.Context, tx *sql.Tx, id string) (VM, error) {
	vm, err := scanVM(tx.QueryRowContext(ctx, "SELECT "+vmColumns+" FROM vms WHERE id = ?", id))
	if err == sql.ErrNoRows {
		return VM{}, &NotFoundError{Kind: "vm", Ref: id}
	}
	return vm, err
}

// GetVM returns the VM named by ref: its id, a unique id prefix of at least
// 4 characters, or its name. A miss is a *NotFoundError listing close
// names; a prefix matching several VMs is an *AmbiguousError.
func (s *Store) GetVM(ctx context.Context, ref string) (VM, error) {
	var vm VM
	err := s.read(ctx, func(tx *sql.Tx) error {
		id, err := resolveRef(ctx, tx, "vm", "vms", ref)
		if err != nil {
			return err
		}
		vm, err = getVM(ctx, tx, id)
		return err
	})
	if err != nil {
		return VM{}, wrapLookup("get vm", ref, err)
	}
	return vm, nil
}

// ListVMs returns every VM, oldest first.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	var out []VM
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+vmColumns+" FROM vms ORDER BY created_at, name")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			vm, err := scanVM(rows)
			if err != nil {
				return err
			}
			out = append(out, vm)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	return out, nil
}

// CountVMs returns the number of VMs.
func (s *Store) CountVMs(ctx context.Context) (int, error) {
	var n int
	err := s.read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, "SELECT count(*) FROM vms").Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count vms: %w", err)
	}
	return n, nil
}

// NameTaken reports whether a VM is named name.
func (s *Store) NameTaken(ctx context.Context, name string) (bool, error) {
	var taken bool
	err := s.read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM vms WHERE name = ?)", name).Scan(&taken)
	})
	if err != nil {
		return false, fmt.Errorf("vm name %q taken: %w", name, err)
	}
	return taken, nil
}

// UpdateVM reads VM id, lets fn change it and writes it back, all in one
// write transaction, so concurrent updates never lose each other's changes.
// UpdatedAt is set to the store clock. If fn returns an error nothing is
// written and that error is returned wrapped. fn must not change ID or
// CreatedAt; a rename onto a taken name is ErrConflict.
func (s *Store) UpdateVM(ctx context.Context, id string, fn func(*VM) error) (VM, error) {
	var out VM
	err := s.write(ctx, func(tx *sql.Tx) error {
		vm, err := getVM(ctx, tx, id)
		if err != nil {
			return err
		}
		orig := vm
		if err := fn(&vm); err != nil {
			return err
		}
		if vm.ID != orig.ID || !vm.CreatedAt.Equal(orig.CreatedAt) {
			return fmt.Errorf("id and created time are immutable: %w", ErrInvalid)
		}
		if err := validateVM(vm); err != nil {
			return err
		}
		vm.UpdatedAt = s.now()
		if err := updateVM(ctx, tx, vm); err != nil {
			return err
		}
		out = vm
		return nil
	})
	if err != nil {
		return VM{}, fmt.Errorf("update vm %s: %w", id, err)
	}
	return out, nil
}

func updateVM(ctx context.Context, tx *sql.Tx, vm VM) error {
	_, err := tx.ExecContext(ctx, `UPDATE vms SET name = ?, image_id = ?, vcpu = ?, memory_mib = ?, disk_bytes = ?, vmm = ?,
		state = ?, desired_state = ?, ip = ?, mac = ?, cid = ?, agent_token = ?, last_error = ?, updated_at = ?, started_at = ?,
		net_policy = ? WHERE id = ?`,
		vm.Name, vm.ImageID, vm.VCPU, vm.MemoryMiB, vm.DiskBytes, vm.VMM,
		vm.State, vm.DesiredState, vm.IP, vm.MAC, cidArg(vm.CID), vm.AgentToken, vm.LastError,
		formatTime(vm.UpdatedAt), formatOptTime(vm.StartedAt), vm.NetPolicy, vm.ID)
	if isUnique(err) {
		return fmt.Errorf("vm name or cid already in use: %w", ErrConflict)
	}
	return err
}

// DeleteVM removes VM id together with its lease and sessions (foreign-key
// cascade). A missing VM is ErrNotFound, so callers that want idempotence
// test for it.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM vms WHERE id = ?", id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return &NotFoundError{Kind: "vm", Ref: id}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	}
	return nil
}

// AllocateCID assigns VM vmID the lowest vsock CID >= 3 no other VM holds
// and returns it. It is idempotent: a VM that already has a CID keeps it.
// Assigning inside the VM's own row (rather than returning a free number
// for CreateVM) keeps concurrent creates from picking the same CID.
func (s *Store) AllocateCID(ctx context.Context, vmID string) (uint32, error) {
	var cid uint32
	err := s.write(ctx, func(tx *sql.Tx) error {
		vm, err := getVM(ctx, tx, vmID)
		if err != nil {
			return err
		}
		if vm.CID != 0 {
			cid = vm.CID
			return nil
		}
		// The lowest free CID is 3 or one past a used CID whose successor is
		// free.
		err = tx.QueryRowContext(ctx, `SELECT min(c) FROM (
			SELECT 3 AS c WHERE NOT EXISTS (SELECT 1 FROM vms WHERE cid = 3)
			UNION ALL
			SELECT cid + 1 FROM vms WHERE cid IS NOT NULL AND cid + 1 NOT IN (SELECT cid FROM vms WHERE cid IS NOT NULL)
		)`).Scan(&cid)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE vms SET cid = ?, updated_at = ? WHERE id = ?", int64(cid), formatTime(s.now()), vmID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("allocate vsock cid for vm %s: %w", vmID, err)
	}
	return cid, nil
}
