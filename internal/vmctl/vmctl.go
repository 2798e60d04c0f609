// Package vmctl orchestrates the life of a VM: create, start, stop,
// restart, delete and the startup reconcile. It ties together the store
// (durable intent), the image store, disks, host networking, the VMM
// drivers, the guest agent and DNS, and it is the only place that decides
// whether a VM is alive (Manager.alive).
//
// Every step that creates something registers its undo on the operation,
// so a failed or cancelled create leaves nothing behind: the tap goes back
// to the pool, the lease is freed, files are removed and the row deleted.
package vmctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/agent/agentclient"
	"banger/internal/config"
	"banger/internal/guestcontract"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/sshkey"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Network is the slice of host networking vmctl needs. hostnet.Manager
// implements it; every method is idempotent.
type Network interface {
	// Ensure creates the bridge, gateway address and NAT table if missing.
	Ensure(ctx context.Context) error
	// AcquireTap makes the tap of the VM with id vmID (named after it),
	// attached to the bridge, that may send only as the VM leased ip (its
	// MAC and address).
	AcquireTap(ctx context.Context, vmID string, ip netip.Addr) (string, error)
	// ReleaseTap unbinds a tap and deletes it.
	ReleaseTap(ctx context.Context, name string) error
	// Adopt marks the taps of VMs found running at daemon start as in use
	// and binds each to its VM's leased address.
	Adopt(ctx context.Context, guests map[string]netip.Addr) error
}

// DNS is the record set of the .vm zone.
type DNS interface {
	Set(name string, ip netip.Addr)
	Remove(name string)
	Replace(records map[string]netip.Addr)
}

// Images resolves an image reference to a registered image, pulling or
// building it first when it is in a catalog but not local.
type Images interface {
	Ensure(ctx context.Context, op *operation.Op, ref string) (store.Image, error)
}

// Host answers what the host can run: it is resolved once per create so a
// newly installed binary is picked up without a daemon restart.
type Host interface {
	// KVMUsable reports whether /dev/kvm works for stock kernels, and why not.
	KVMUsable() (bool, string)
	// Firecracker returns the firecracker binary path, or "" when absent.
	Firecracker() string
	// QEMU returns the qemu-system-x86_64 path, or "" when absent.
	QEMU() string
	// MemoryMiB is the host's RAM, the ceiling for one VM's memory.
	MemoryMiB() int
}

// Options are the Manager's collaborators.
type Options struct {
	Store   *store.Store
	Images  Images
	Network Network
	DNS     DNS
	// Egress applies VMs' egress policies; nil leaves every VM open.
	Egress     Egress
	Host       Host
	Drivers    map[string]vmm.Driver
	Handles    *vmm.HandleCache
	Config     *config.Config
	VMsDir     string
	SSHKey     sshkey.Key
	KnownHosts *sshkey.KnownHosts
	Logger     *slog.Logger
	// AgentTimeout bounds the wait for the guest agent after boot.
	AgentTimeout time.Duration
	// SSHWait bounds how long "agent ready" also waits for sshd (systemd
	// starts it right after the agent reports ready).
	SSHWait time.Duration
	// StopTimeout is how long a guest gets to shut down before its VMM is
	// killed.
	StopTimeout time.Duration
	// WarmDir holds the images' warm templates; "warm" next to VMsDir
	// when empty.
	WarmDir string
	// ConsoleLogMax bounds each VM's console.log (and its one rotated
	// copy); zero means vmm.DefaultConsoleLogMax.
	ConsoleLogMax int64
}

// Manager runs VM lifecycles. It is safe for concurrent use; operations on
// one VM are serialised by a per-VM lock.
type Manager struct {
	opt Options
	log *slog.Logger

	mu       sync.Mutex
	locks    map[string]*sync.Mutex
	agents   map[string]*agentConn
	verified map[string]stateStamp // state files hashed and unchanged since
}

type agentConn struct {
	dialer agentclient.Dialer
	client *agentclient.Client
	h      vmm.Handles
}

// New returns a Manager over opt.
func New(opt Options) *Manager {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.AgentTimeout == 0 {
		opt.AgentTimeout = 4 * time.Minute
	}
	if opt.SSHWait == 0 {
		opt.SSHWait = 60 * time.Second
	}
	if opt.StopTimeout == 0 {
		opt.StopTimeout = 30 * time.Second
	}
	if opt.WarmDir == "" {
		opt.WarmDir = filepath.Join(filepath.Dir(opt.VMsDir), layout.WarmDir)
	}
	if opt.ConsoleLogMax <= 0 {
		opt.ConsoleLogMax = vmm.DefaultConsoleLogMax
	}
	return &Manager{opt: opt, log: opt.Logger, locks: map[string]*sync.Mutex{}, agents: map[string]*agentConn{}, verified: map[string]stateStamp{}}
}

// lock serialises lifecycle changes of one VM.
func (m *Manager) lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// alive is the one liveness decision: the VM has handles and its VMM
// process is ours, for this VM, and running.
func (m *Manager) alive(id string) (vmm.Handles, bool) {
	h, ok := m.opt.Handles.Get(id)
	if !ok {
		return vmm.Handles{}, false
	}
	return h, vmm.Alive(h)
}

// Alive reports whether the VM's VMM process is running.
func (m *Manager) Alive(id string) bool {
	_, ok := m.alive(id)
	return ok
}

// Handles returns the VM's current handles, if it has any.
func (m *Manager) Handles(id string) (vmm.Handles, bool) { return m.opt.Handles.Get(id) }

// Agent returns a client for the VM's guest agent. The VM must be running.
func (m *Manager) Agent(ctx context.Context, ref string) (*agentclient.Client, store.VM, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return nil, store.VM{}, err
	}
	h, ok := m.alive(vm.ID)
	if !ok {
		hint := "start it with: banger vm start " + vm.Name
		if m.View(vm) == StateSuspended {
			hint = "it is suspended; resume it with: banger vm resume " + vm.Name
		}
		return nil, vm, fmt.Errorf("vm %s is not running (%s): %w", vm.Name, hint, ErrNotRunning)
	}
	if h.Paused {
		return nil, vm, fmt.Errorf("vm %s is paused (resume it with: banger vm resume %s): %w", vm.Name, vm.Name, ErrNotRunning)
	}
	return m.agentClient(vm, h), vm, nil
}

// ErrNotRunning reports an action that needs a running VM.
var ErrNotRunning = errors.New("vm not running")

func (m *Manager) agentClient(vm store.VM, h vmm.Handles) *agentclient.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.agents[vm.ID]; ok && c.h == h {
		return c.client
	}
	if c, ok := m.agents[vm.ID]; ok {
		c.dialer.Close()
	}
	var d agentclient.Dialer
	if h.AgentTransport == vmm.TransportVsock {
		d = agentclient.NewVsockDialer(h.VsockSocket, guestcontract.AgentVsockPort)
	} else {
		d = agentclient.NewSerialDialer(h.SerialSocket)
	}
	c := &agentConn{dialer: d, client: agentclient.NewClient(d, vm.AgentToken), h: h}
	m.agents[vm.ID] = c
	return c.client
}

// agentClientAs is a client of the VM's agent connection that presents
// token instead of the VM's own: the template's token, which a guest
// restored from an image's warm template answers to until re-identified.
func (m *Manager) agentClientAs(vm store.VM, h vmm.Handles, token string) *agentclient.Client {
	m.agentClient(vm, h) // make sure the connection exists
	m.mu.Lock()
	defer m.mu.Unlock()
	return agentclient.NewClient(m.agents[vm.ID].dialer, token)
}

func (m *Manager) dropAgent(id string) { m.hangUpAgent(id) }

// hangUpAgent closes the VM's agent connection and reports whether a live
// one was closed (the guest then sees its host go away).
func (m *Manager) hangUpAgent(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.agents[id]
	if !ok {
		return false
	}
	live := true
	if cd, ok := c.dialer.(interface{ Connected() bool }); ok {
		live = cd.Connected()
	}
	c.dialer.Close()
	delete(m.agents, id)
	return live
}

// Close releases agent connections. VMs keep running.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, c := range m.agents {
		c.dialer.Close()
		delete(m.agents, id)
	}
}
