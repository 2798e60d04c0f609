package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Lease is a guest address handed to a VM. It lives as long as the VM row
// (foreign key, ON DELETE CASCADE) or until released.
type Lease struct {
	IP        netip.Addr
	VMID      string
	CreatedAt time.Time
}

// AllocateLease leases VM vmID the lowest free host address of subnet (an
// IPv4 prefix), skipping the network and broadcast addresses and reserved
// (the gateway). The VM row must exist: create it first, allocate, then
// record the address with UpdateVM. It is idempotent: a VM that already
// holds a lease in subnet gets that lease back. The write transaction
// takes the database write lock before reading the taken addresses, so
// concurrent callers never receive the same address. A subnet with no free
// address is ErrConflict.
func (s *Store) AllocateLease(ctx context.Context, vmID string, subnet netip.Prefix, reserved ...netip.Addr) (netip.Addr, error) {
	var ip netip.Addr
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		ip, err = allocateLease(ctx, tx, vmID, subnet, reserved, s.now())
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate lease in %s for vm %s: %w", subnet, vmID, err)
	}
	return ip, nil
}

func allocateLease(ctx context.Context, tx *sql.Tx, vmID string, subnet netip.Prefix, reserved []netip.Addr, now time.Time) (netip.Addr, error) {
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("subnet %s is not an IPv4 prefix: %w", subnet, ErrInvalid)
	}
	subnet = subnet.Masked()
	if _, err := getVM(ctx, tx, vmID); err != nil {
		return netip.Addr{}, err
	}
	var held string
	switch err := tx.QueryRowContext(ctx, "SELECT ip FROM leases WHERE vm_id = ?", vmID).Scan(&held); err {
	case nil:
		a, err := netip.ParseAddr(held)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("stored lease %q: %w", held, err)
		}
		if !subnet.Contains(a) {
			return netip.Addr{}, fmt.Errorf("vm already holds %s outside the subnet: %w", a, ErrConflict)
		}
		return a, nil
	case sql.ErrNoRows:
	default:
		return netip.Addr{}, err
	}
	taken, err := leasedAddrs(ctx, tx)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, r := range reserved {
		taken[r] = true
	}
	ip, ok := lowestFree(subnet, taken)
	if !ok {
		return netip.Addr{}, fmt.Errorf("subnet %s full: %w", subnet, ErrConflict)
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO leases (ip, vm_id, created_at) VALUES (?, ?, ?)", ip.String(), vmID, formatTime(now))
	if isUnique(err) {
		return netip.Addr{}, fmt.Errorf("address %s already leased: %w", ip, ErrConflict)
	}
	if err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

// leasedAddrs returns every leased address.
func leasedAddrs(ctx context.Context, tx *sql.Tx) (map[netip.Addr]bool, error) {
	ips, err := columnStrings(ctx, tx, "SELECT ip FROM leases")
	if err != nil {
		return nil, err
	}
	taken := make(map[netip.Addr]bool, len(ips))
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("stored lease %q: %w", s, err)
		}
		taken[a] = true
	}
	return taken, nil
}

// lowestFree returns the lowest address of the IPv4 prefix p that is
// neither its network nor its broadcast address nor in taken.
func lowestFree(p netip.Prefix, taken map[netip.Addr]bool) (netip.Addr, bool) {
	if p.Bits() > 30 {
		return netip.Addr{}, false // /31 and /32 have no host addresses to lease
	}
	for a := p.Addr().Next(); a.IsValid() && p.Contains(a); a = a.Next() {
		if !p.Contains(a.Next()) {
			break // a is the broadcast address
		}
		if !taken[a] {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// ReleaseLease frees VM vmID's lease. Releasing a VM without a lease (or a
// VM that no longer exists) succeeds.
func (s *Store) ReleaseLease(ctx context.Context, vmID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM leases WHERE vm_id = ?", vmID)
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease of vm %s: %w", vmID, err)
	}
	return nil
}

// ListLeases returns every lease in address order.
func (s *Store) ListLeases(ctx context.Context) ([]Lease, error) {
	var out []Lease
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT ip, vm_id, created_at FROM leases")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ip, created string
			var l Lease
			if err := rows.Scan(&ip, &l.VMID, &created); err != nil {
				return err
			}
			if l.IP, err = netip.ParseAddr(ip); err != nil {
				return fmt.Errorf("stored lease %q: %w", ip, err)
			}
			if l.CreatedAt, err = parseTime(created); err != nil {
				return err
			}
			out = append(out, l)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out, nil
}
