package daemon

import "context"

// startSubsystems starts what the daemon runs besides the API (DNS server,
// reconcile of running VMs, tap pool), after the store is open and before
// the socket serves. Add each subsystem here, storing its handle in a
// Daemon field.
func (d *Daemon) startSubsystems(ctx context.Context) error {
	return d.startVMs(ctx)
}

// stopSubsystems stops, in reverse order, what startSubsystems started.
// It runs after operations have rolled back and requests have drained.
func (d *Daemon) stopSubsystems(ctx context.Context) error {
	return d.stopVMs()
}
