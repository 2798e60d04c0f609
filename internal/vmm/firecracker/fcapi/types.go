package fcapi

// InstanceInfo describes the microVM instance (definition InstanceInfo).
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

// Instance states as InstanceInfo.State reports them.
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// FirecrackerVersion is the answer of GET /version.
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// MachineConfiguration is the vCPU and memory shape (definition
// MachineConfiguration). Smt and TrackDirtyPages are pointers so that an
// explicit false is sent.
type MachineConfiguration struct {
	VcpuCount       int    `json:"vcpu_count"`
	MemSizeMib      int    `json:"mem_size_mib"`
	Smt             *bool  `json:"smt,omitempty"`
	TrackDirtyPages *bool  `json:"track_dirty_pages,omitempty"`
	HugePages       string `json:"huge_pages,omitempty"`
}

// BootSource is the kernel, initrd and command line (definition
// BootSource).
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// Drive is one virtio-block device (definition Drive).
type Drive struct {
	DriveID      string `json:"drive_id"`
	IsRootDevice bool   `json:"is_root_device"`
	PathOnHost   string `json:"path_on_host,omitempty"`
	IsReadOnly   *bool  `json:"is_read_only,omitempty"`
	CacheType    string `json:"cache_type,omitempty"`
	IoEngine     string `json:"io_engine,omitempty"`
}

// NetworkInterface is one virtio-net device on a host tap (definition
// NetworkInterface).
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMac    string `json:"guest_mac,omitempty"`
}

// Vsock is the vsock device, backed by a unix socket on the host
// (definition Vsock).
type Vsock struct {
	GuestCid uint32 `json:"guest_cid"`
	UdsPath  string `json:"uds_path"`
}

// EntropyDevice is the virtio-rng device (definition EntropyDevice); its
// only field, a rate limiter, banger leaves unset.
type EntropyDevice struct{}

// Logger configures Firecracker's own log (definition Logger).
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"`
	ShowLevel     *bool  `json:"show_level,omitempty"`
	ShowLogOrigin *bool  `json:"show_log_origin,omitempty"`
	Module        string `json:"module,omitempty"`
}

// Metrics configures Firecracker's metrics file (definition Metrics).
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// ActionType is the action of PUT /actions.
type ActionType string

// Actions banger uses.
const (
	ActionInstanceStart  ActionType = "InstanceStart"
	ActionSendCtrlAltDel ActionType = "SendCtrlAltDel"
	ActionFlushMetrics   ActionType = "FlushMetrics"
)

// InstanceActionInfo is the body of PUT /actions (definition
// InstanceActionInfo).
type InstanceActionInfo struct {
	ActionType ActionType `json:"action_type"`
}

// VMState is the state PATCH /vm asks for.
type VMState string

// States of PATCH /vm.
const (
	VMPaused  VMState = "Paused"
	VMResumed VMState = "Resumed"
)

// VM is the body of PATCH /vm (definition Vm).
type VM struct {
	State VMState `json:"state"`
}

// Snapshot types of SnapshotCreateParams.
const (
	SnapshotFull = "Full"
	SnapshotDiff = "Diff"
)

// SnapshotCreateParams is the body of PUT /snapshot/create (definition
// SnapshotCreateParams).
type SnapshotCreateParams struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"`
}

// Memory backend types of MemoryBackend.
const (
	BackendFile = "File"
	BackendUffd = "Uffd"
)

// MemoryBackend names where a snapshot load takes guest memory from
// (definition MemoryBackend).
type MemoryBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// NetworkOverride replaces an interface's tap on snapshot load
// (definition NetworkOverride; newer Firecracker releases only).
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride replaces the vsock device's socket path on snapshot load
// (definition VsockOverride; newer Firecracker releases only).
type VsockOverride struct {
	UdsPath string `json:"uds_path"`
}

// SnapshotLoadParams is the body of PUT /snapshot/load (definition
// SnapshotLoadParams). Older Firecracker releases reject fields they do
// not know, so the overrides must stay unset for them.
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	TrackDirtyPages  bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}
