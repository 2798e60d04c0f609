package mcpserver

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
	"banger/internal/stream"
	"banger/internal/termsafe"
)

// Output bounds. A guest is untrusted: whatever it sends back is cut at
// these sizes and flagged as truncated, never buffered without end.
const (
	DefaultMaxOutput = 64 << 10
	MaxOutput        = 4 << 20
	DefaultMaxFile   = 1 << 20
	MaxFile          = 16 << 20
	// MaxFlows bounds the flows of one vm_net_log answer, MaxFlowText
	// each string of a flow (names, addresses and reasons come from the
	// guest's traffic).
	MaxFlows       = 500
	MaxFlowText    = 256
	defaultTimeout = 10 * time.Minute
)

func ptr[T any](v T) *T { return &v }

// Annotations, shared by the tools of a kind.
var (
	readOnly    = &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: ptr(false)}
	additive    = &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)}
	destructive = &mcp.ToolAnnotations{DestructiveHint: ptr(true), OpenWorldHint: ptr(false)}
	runsCode    = &mcp.ToolAnnotations{DestructiveHint: ptr(true), OpenWorldHint: ptr(true)}
	// hostWrite is for a tool that writes outside the VMs, into the
	// user's files on the host (workspace_pull: a branch of their repo).
	// Pulling again the same commit changes nothing.
	hostWrite = &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)}
)

// VMRef names the VM a tool acts on.
type VMRef struct {
	VM string `json:"vm" jsonschema:"the VM's name or id"`
}

func (r VMRef) vmRef() string { return r.VM }

// CreateIn is the input of vm_create.
type CreateIn struct {
	Name      string   `json:"name,omitempty" jsonschema:"VM name (generated when empty)"`
	Image     string   `json:"image,omitempty" jsonschema:"image name (the daemon's default when empty)"`
	VCPU      int      `json:"vcpu,omitempty" jsonschema:"virtual CPUs (the configured default when 0)"`
	MemoryMiB int      `json:"memory_mib,omitempty" jsonschema:"memory in MiB (the configured default when 0)"`
	DiskGiB   int      `json:"disk_gib,omitempty" jsonschema:"work disk size in GiB (the configured default when 0)"`
	From      string   `json:"from,omitempty" jsonschema:"make the VM from a snapshot VM@SNAPSHOT of a VM this server may use (image and size then come from the snapshot)"`
	Net       string   `json:"net,omitempty" jsonschema:"egress: open (the internet less private ranges and the host), allow (only the allow rules) or none; the configured default (or the snapshot's policy with from) when empty"`
	Allow     []string `json:"allow,omitempty" jsonschema:"egress rules for net=allow (allow alone implies it): HOST, *.DOMAIN, IPV4 or CIDR, each with an optional :PORT or :LOW-HIGH, or @PRESET such as @github or @model-apis"`
}

// NetIn is the input of vm_net. Without mode, allow and deny it only
// reads the policy.
type NetIn struct {
	VMRef
	Mode  string   `json:"mode,omitempty" jsonschema:"set the egress mode: open, allow or none (the allow list is kept across modes)"`
	Allow []string `json:"allow,omitempty" jsonschema:"rules to add to the allow list (switches an open or none VM to allow): HOST, *.DOMAIN, IPV4 or CIDR, each with an optional :PORT or :LOW-HIGH, or @PRESET"`
	Deny  []string `json:"deny,omitempty" jsonschema:"rules to remove from the allow list"`
}

// NetLogIn is the input of vm_net_log.
type NetLogIn struct {
	VMRef
	After uint64 `json:"after,omitempty" jsonschema:"return the flows after this sequence number: the next of the previous answer (0: from the start of the log)"`
}

// NetLogOut is the result of vm_net_log: the flows oldest first, each
// string the guest influenced capped at MaxFlowText bytes.
type NetLogOut struct {
	Flows []api.Flow `json:"flows"`
	// Next is the after of the next call.
	Next uint64 `json:"next"`
	// Lost counts flows that fell out of the bounded log before they were
	// read.
	Lost uint64 `json:"lost,omitempty"`
	// Truncated says more flows follow than one answer holds: call again
	// with after=next.
	Truncated bool `json:"truncated"`
}

// ForkIn is the input of vm_fork.
type ForkIn struct {
	VMRef
	Count  int    `json:"count,omitempty" jsonschema:"how many copies (default 1, at most 16)"`
	Prefix string `json:"prefix,omitempty" jsonschema:"copies are named PREFIX-1, PREFIX-2...; the VM's name when empty"`
}

// SnapshotIn is the input of vm_snapshot.
type SnapshotIn struct {
	VMRef
	Name string `json:"name,omitempty" jsonschema:"snapshot name: lowercase letters, digits, hyphens (snap-N when empty)"`
}

// SnapshotOut wraps one snapshot.
type SnapshotOut struct {
	Snapshot api.Snapshot `json:"snapshot"`
}

// VMOut wraps one VM.
type VMOut struct {
	VM api.VM `json:"vm"`
}

// VMsOut wraps a list of VMs.
type VMsOut struct {
	VMs []api.VM `json:"vms"`
}

// DeleteIn is the input of vm_delete.
type DeleteIn struct {
	VMRef
	Force bool `json:"force,omitempty" jsonschema:"kill the VM instead of shutting it down"`
}

// DoneOut is the answer of tools with nothing else to say.
type DoneOut struct {
	Done bool `json:"done"`
}

// ExecIn is the input of vm_exec.
type ExecIn struct {
	VMRef
	Argv           []string `json:"argv" jsonschema:"the command and its arguments; no shell unless you call one"`
	Cwd            string   `json:"cwd,omitempty" jsonschema:"working directory in the guest (default /root)"`
	Env            []string `json:"env,omitempty" jsonschema:"extra environment, KEY=VALUE each"`
	Stdin          string   `json:"stdin,omitempty" jsonschema:"text written to the command's standard input"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds (default 600)"`
	MaxOutputBytes int      `json:"max_output_bytes,omitempty" jsonschema:"cap of each of stdout and stderr (default 65536, at most 4194304)"`
}

// ExecOut is the result of vm_exec.
type ExecOut struct {
	ExitCode        int    `json:"exit_code"`
	Signal          string `json:"signal,omitempty"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	TimedOut        bool   `json:"timed_out"`
}

// ReadFileIn is the input of vm_read_file.
type ReadFileIn struct {
	VMRef
	Path     string `json:"path" jsonschema:"absolute path of a regular file in the guest"`
	MaxBytes int    `json:"max_bytes,omitempty" jsonschema:"most bytes returned (default 1048576, at most 16777216)"`
}

// ReadFileOut is the result of vm_read_file.
type ReadFileOut struct {
	Content   string `json:"content"`
	Size      int64  `json:"size"`
	Truncated bool   `json:"truncated"`
	// Binary is set when the content is not UTF-8; Content then holds the
	// bytes with invalid sequences replaced.
	Binary bool `json:"binary"`
}

// WriteFileIn is the input of vm_write_file.
type WriteFileIn struct {
	VMRef
	Path    string `json:"path" jsonschema:"absolute path of the file in the guest; parent directories are created"`
	Content string `json:"content" jsonschema:"the file's content"`
	Mode    int    `json:"mode,omitempty" jsonschema:"permission bits, e.g. 493 for 0755 (default 420, 0644)"`
}

// ListDirIn is the input of vm_list_dir.
type ListDirIn struct {
	VMRef
	Path string `json:"path" jsonschema:"absolute path of a directory in the guest"`
}

// DirEntry is one entry of vm_list_dir.
type DirEntry struct {
	Name string `json:"name"`
	Type string `json:"type"` // file | dir | symlink | other
	Size int64  `json:"size"`
	Mode string `json:"mode"`
}

// ListDirOut is the result of vm_list_dir.
type ListDirOut struct {
	Entries   []DirEntry `json:"entries"`
	Truncated bool       `json:"truncated"`
}

// StatsOut is the result of vm_stats.
type StatsOut struct {
	Stats []api.VMStats `json:"stats"`
}

// PortsOut is the result of vm_ports.
type PortsOut struct {
	Ports []api.Port `json:"ports"`
}

// LogsIn is the input of vm_logs.
type LogsIn struct {
	VMRef
	TailBytes int `json:"tail_bytes,omitempty" jsonschema:"how much of the end of the console log (default 16384, at most 1048576)"`
}

// LogsOut is the result of vm_logs and session_logs.
type LogsOut struct {
	Text      string `json:"text"`
	Truncated bool   `json:"truncated"`
}

// SessionStartIn is the input of session_start.
type SessionStartIn struct {
	VMRef
	Name string   `json:"name,omitempty" jsonschema:"session name (generated when empty)"`
	Argv []string `json:"argv" jsonschema:"the long-running command"`
	Cwd  string   `json:"cwd,omitempty"`
	Env  []string `json:"env,omitempty"`
}

// SessionOut wraps one session.
type SessionOut struct {
	Session api.Session `json:"session"`
}

// SessionsOut wraps a list of sessions.
type SessionsOut struct {
	Sessions []api.Session `json:"sessions"`
}

// SessionRef names a session of a VM.
type SessionRef struct {
	VMRef
	Name string `json:"name" jsonschema:"the session's name"`
}

// SessionLogsIn is the input of session_logs.
type SessionLogsIn struct {
	SessionRef
	TailBytes int `json:"tail_bytes,omitempty" jsonschema:"how much of the end of the session's output (default 16384, at most 1048576)"`
}

// SessionStopIn is the input of session_stop.
type SessionStopIn struct {
	SessionRef
	Signal string `json:"signal,omitempty" jsonschema:"signal name (default TERM)"`
}

func (s *Server) register() {
	srv := s.mcp
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_create", Annotations: additive,
		Description: "Create and boot a new banger VM and wait until its agent answers. Returns the VM."},
		logged(s, "vm_create", s.create))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_list", Annotations: readOnly,
		Description: "List the VMs this server may use (the ones it created, or all with --all)."},
		logged(s, "vm_list", s.list))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_show", Annotations: readOnly,
		Description: "Show one VM: state, address, spec, image."},
		logged(s, "vm_show", s.show))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_delete", Annotations: destructive,
		Description: "DESTRUCTIVE: stop a VM and delete it with its disks. Nothing in it can be recovered."},
		logged(s, "vm_delete", s.delete))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_pause", Annotations: additive,
		Description: "Freeze a running VM's vCPUs; its memory and processes stay as they are until vm_resume."},
		logged(s, "vm_pause", s.pause))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_resume", Annotations: additive,
		Description: "Let a paused VM run again, or restore a suspended one where it was; the guest clock is corrected."},
		logged(s, "vm_resume", s.resume))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_suspend", Annotations: additive,
		Description: "Save a VM's memory and device state to disk and end its VMM, freeing its host memory; vm_resume restores it with its processes."},
		logged(s, "vm_suspend", s.suspend))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_snapshot", Annotations: additive,
		Description: "Save a running VM's memory, processes and disks as a named snapshot; the VM runs on. vm_create with from=VM@SNAPSHOT makes new VMs from it."},
		logged(s, "vm_snapshot", s.snapshot))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_fork", Annotations: additive,
		Description: "Make live copies of a running VM: each has the source's processes, sessions and files but its own name, address and keys, so several attempts can start from the same state. With a workspace, each copy's pull gives its own branch banger/COPY. Returns the copies."},
		logged(s, "vm_fork", s.fork))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_net", Annotations: additive,
		Description: "Show a VM's egress policy (mode open, allow or none; the allow rules; whether it is enforced; flows allowed and denied), or change it with mode, allow (add rules) and deny (remove rules). A running VM gets the new policy at once. Returns the policy."},
		logged(s, "vm_net", s.net))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_net_log", Annotations: readOnly,
		Description: "A VM's egress flow log, oldest first: DNS queries and proxied connections with their verdict (allow or deny) and the reason of a refusal. Pass after=next to get only newer flows. Names come from the guest's traffic and are untrusted."},
		logged(s, "vm_net_log", s.netLog))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_exec", Annotations: runsCode,
		Description: "Run a command in a VM as root and return its exit code, stdout and stderr (each capped; truncation is flagged). Can change anything inside the VM."},
		logged(s, "vm_exec", s.exec))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_read_file", Annotations: readOnly,
		Description: "Read a regular file from a VM (capped; truncation is flagged)."},
		logged(s, "vm_read_file", s.readFile))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_write_file", Annotations: destructive,
		Description: "DESTRUCTIVE: write a file in a VM, replacing any file at that path. Parent directories are created."},
		logged(s, "vm_write_file", s.writeFile))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_list_dir", Annotations: readOnly,
		Description: "List a directory in a VM: name, type, size and mode of each entry (at most 1000)."},
		logged(s, "vm_list_dir", s.listDir))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_ports", Annotations: readOnly,
		Description: "List the TCP and UDP ports listening in a VM, with their processes."},
		logged(s, "vm_ports", s.ports))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_stats", Annotations: readOnly,
		Description: "Live figures of a running VM over about a second: guest CPU %, memory used/total, load, /root and overlay use, network bytes/s, and its VMM's CPU % and RSS on the host."},
		logged(s, "vm_stats", s.stats))
	mcp.AddTool(srv, &mcp.Tool{Name: "vm_logs", Annotations: readOnly,
		Description: "The end of a VM's serial console log (boot and kernel messages)."},
		logged(s, "vm_logs", s.logs))
	mcp.AddTool(srv, &mcp.Tool{Name: "workspace_prepare", Annotations: destructive,
		Description: "DESTRUCTIVE: replace /root/repo in a running VM with a copy of a git repository on the host (path; default this server's working directory). " +
			"Mode worktree (default) sends the working tree as the user sees it (tracked files with uncommitted changes, untracked files git does not ignore) and .git, so the guest can commit; " +
			"full_copy sends every file, ignored ones (build output, local secrets) included. The VM's previous /root/repo is gone, commits not pulled included; " +
			"changes not committed in the guest make it refuse unless force. Returns what was sent (entries, files, bytes) and /root/repo afterwards."},
		logged(s, "workspace_prepare", s.workspacePrepare))
	mcp.AddTool(srv, &mcp.Tool{Name: "workspace_status", Annotations: readOnly,
		Description: "Show /root/repo in a VM: whether it exists and is a git repository, its commit and branch, and whether it has uncommitted changes (listed, capped). The text comes from the guest and is untrusted."},
		logged(s, "workspace_status", s.workspaceStatus))
	mcp.AddTool(srv, &mcp.Tool{Name: "workspace_pull", Annotations: hostWrite,
		Description: "DESTRUCTIVE with force: writes into the user's git repository on the host (path; default this server's working directory). " +
			"Brings the commit checked out in a VM's /root/repo back as branch banger/VM (or branch): created, or fast-forwarded; a branch that is not an ancestor of the guest's commit is replaced only with force. " +
			"Never touches the host's checked-out branch or working tree; uncommitted guest changes are not pulled (commit them in the guest first). Returns the branch, the commit and what happened."},
		logged(s, "workspace_pull", s.workspacePull))
	mcp.AddTool(srv, &mcp.Tool{Name: "session_start", Annotations: runsCode,
		Description: "Start a long-running command in a VM as a named session that keeps running after this call (a dev server, an agent)."},
		logged(s, "session_start", s.sessionStart))
	mcp.AddTool(srv, &mcp.Tool{Name: "session_list", Annotations: readOnly,
		Description: "List a VM's sessions with their state and exit codes."},
		logged(s, "session_list", s.sessionList))
	mcp.AddTool(srv, &mcp.Tool{Name: "session_logs", Annotations: readOnly,
		Description: "The end of a session's output."},
		logged(s, "session_logs", s.sessionLogs))
	mcp.AddTool(srv, &mcp.Tool{Name: "session_stop", Annotations: destructive,
		Description: "DESTRUCTIVE: signal a session (TERM by default) and wait for it to exit."},
		logged(s, "session_stop", s.sessionStop))
}

func (s *Server) create(ctx context.Context, _ *mcp.CallToolRequest, in CreateIn) (*mcp.CallToolResult, VMOut, error) {
	if !s.opt.NetAdmin && (len(in.Allow) > 0 || in.Net != "" && in.Net != api.NetNone) {
		return nil, VMOut{}, errNetAdmin
	}
	req := api.CreateVMRequest{Name: in.Name, Image: in.Image, Net: in.Net, Allow: in.Allow}
	req.Spec = api.VMSpec{VCPU: in.VCPU, MemoryMiB: in.MemoryMiB, DiskBytes: int64(in.DiskGiB) << 30}
	s.fillDefaults(&req.Spec)
	if in.From != "" {
		src, _, ok := strings.Cut(in.From, "@")
		if !ok {
			return nil, VMOut{}, fmt.Errorf("from %q: want VM@SNAPSHOT", in.From)
		}
		// A snapshot holds its VM's memory: it is in scope only with it.
		v, err := s.vm(ctx, src)
		if err != nil {
			return nil, VMOut{}, err
		}
		req.From = v.ID + in.From[len(src):]
	}
	ref, err := s.opt.Client.CreateVM(ctx, req)
	if err != nil {
		return nil, VMOut{}, err
	}
	var vm api.VM
	err = s.waitOp(ctx, ref, &vm)
	if vm.ID == "" && in.Name != "" {
		// A failed create may still have left a row the caller should see.
		if v, gerr := s.opt.Client.GetVM(ctx, in.Name); gerr == nil {
			vm = v
		}
	}
	if vm.ID != "" {
		s.adopt(vm.ID)
	}
	if err != nil {
		return nil, VMOut{}, fmt.Errorf("create vm: %w", err)
	}
	return nil, VMOut{VM: vm}, nil
}

// fillDefaults completes a spec from the resolved defaults the CLI would
// use, so a model need not know the host's shape.
func (s *Server) fillDefaults(spec *api.VMSpec) {
	d := s.opt.Defaults
	if spec.VCPU == 0 {
		spec.VCPU = d.VCPU
	}
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = d.MemoryMiB
	}
	if spec.DiskBytes == 0 {
		spec.DiskBytes = d.DiskBytes
	}
}

func (s *Server) list(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, VMsOut, error) {
	vms, err := s.opt.Client.ListVMs(ctx)
	if err != nil {
		return nil, VMsOut{}, err
	}
	out := VMsOut{VMs: []api.VM{}}
	for _, v := range vms {
		if s.owns(v.ID) {
			out.VMs = append(out.VMs, v)
		}
	}
	return nil, out, nil
}

func (s *Server) show(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, VMOut, error) {
	v, err := s.vm(ctx, in.VM)
	return nil, VMOut{VM: v}, err
}

func (s *Server) pause(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, VMOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, VMOut{}, err
	}
	v, err = s.opt.Client.PauseVM(ctx, v.ID)
	return nil, VMOut{VM: v}, err
}

func (s *Server) resume(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, VMOut, error) {
	return s.vmOp(ctx, in.VM, s.opt.Client.ResumeVM)
}

func (s *Server) suspend(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, VMOut, error) {
	return s.vmOp(ctx, in.VM, s.opt.Client.SuspendVM)
}

func (s *Server) snapshot(ctx context.Context, _ *mcp.CallToolRequest, in SnapshotIn) (*mcp.CallToolResult, SnapshotOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, SnapshotOut{}, err
	}
	op, err := s.opt.Client.TakeSnapshot(ctx, v.ID, api.SnapshotRequest{Name: in.Name})
	if err != nil {
		return nil, SnapshotOut{}, err
	}
	var out api.Snapshot
	err = s.waitOp(ctx, op, &out)
	return nil, SnapshotOut{Snapshot: out}, err
}

func (s *Server) fork(ctx context.Context, _ *mcp.CallToolRequest, in ForkIn) (*mcp.CallToolResult, VMsOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, VMsOut{}, err
	}
	n := in.Count
	if n == 0 {
		n = 1
	}
	op, err := s.opt.Client.ForkVM(ctx, v.ID, api.ForkRequest{Count: n, Prefix: in.Prefix})
	if err != nil {
		return nil, VMsOut{}, err
	}
	var out []api.VM
	err = s.waitOp(ctx, op, &out)
	for _, c := range out {
		s.adopt(c.ID)
	}
	return nil, VMsOut{VMs: out}, err
}

// vmOp runs a VM operation (resume, suspend) on a VM in scope and waits
// for it.
func (s *Server) vmOp(ctx context.Context, ref string, start func(context.Context, string) (api.OperationRef, error)) (*mcp.CallToolResult, VMOut, error) {
	v, err := s.vm(ctx, ref)
	if err != nil {
		return nil, VMOut{}, err
	}
	op, err := start(ctx, v.ID)
	if err != nil {
		return nil, VMOut{}, err
	}
	var out api.VM
	err = s.waitOp(ctx, op, &out)
	return nil, VMOut{VM: out}, err
}

func (s *Server) net(ctx context.Context, _ *mcp.CallToolRequest, in NetIn) (*mcp.CallToolResult, api.NetStatus, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, api.NetStatus{}, err
	}
	if in.Mode == "" && len(in.Allow) == 0 && len(in.Deny) == 0 {
		st, err := s.opt.Client.NetStatus(ctx, v.ID)
		return nil, st, err
	}
	// Tightening needs no permission: to none, or removing rules.
	if !s.opt.NetAdmin && (len(in.Allow) > 0 || in.Mode != "" && in.Mode != api.NetNone) {
		return nil, api.NetStatus{}, errNetAdmin
	}
	st, err := s.opt.Client.ChangeNet(ctx, v.ID, api.NetChange{Mode: in.Mode, Allow: in.Allow, Deny: in.Deny})
	return nil, st, err
}

// errNetAdmin refuses a loosening of egress policy to a server started
// without --net-admin.
var errNetAdmin = errors.New("this MCP server may not loosen egress policy (net other than none, allow rules, or a mode other than none): the user starts it with `banger mcp --net-admin` to allow that")

func (s *Server) netLog(ctx context.Context, _ *mcp.CallToolRequest, in NetLogIn) (*mcp.CallToolResult, NetLogOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, NetLogOut{}, err
	}
	lg, err := s.opt.Client.NetLog(ctx, v.ID, in.After)
	if err != nil {
		return nil, NetLogOut{}, err
	}
	return nil, capNetLog(lg), nil
}

// capNetLog bounds a flow log page: at most MaxFlows flows (Next is then
// the Seq of the last one kept, so the next call resumes after it) and
// MaxFlowText bytes of valid UTF-8 in each string.
func capNetLog(lg api.NetLog) NetLogOut {
	out := NetLogOut{Flows: []api.Flow{}, Next: lg.Next, Lost: lg.Lost}
	flows := lg.Flows
	if len(flows) > MaxFlows {
		flows = flows[:MaxFlows]
		out.Next, out.Truncated = flows[len(flows)-1].Seq, true
	}
	for _, f := range flows {
		f.Kind, f.Verdict = capText(f.Kind), capText(f.Verdict)
		f.Name, f.Addr, f.Reason = capText(f.Name), capText(f.Addr), capText(f.Reason)
		out.Flows = append(out.Flows, f)
	}
	return out
}

// capText cuts s to MaxFlowText bytes on a character boundary, marking a
// cut with "…", and replaces invalid UTF-8.
func capText(s string) string { return termsafe.Truncate(s, MaxFlowText) }

func (s *Server) delete(ctx context.Context, _ *mcp.CallToolRequest, in DeleteIn) (*mcp.CallToolResult, DoneOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, DoneOut{}, err
	}
	if err := s.opt.Client.DeleteVM(ctx, v.ID, in.Force); err != nil {
		return nil, DoneOut{}, err
	}
	s.mu.Lock()
	delete(s.owned, v.ID)
	s.mu.Unlock()
	return nil, DoneOut{Done: true}, nil
}

// capped keeps the first max bytes written to it and notes whether more
// came.
type capped struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room < len(p) {
		c.truncated = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

func clamp(v, def, most int) int {
	if v <= 0 {
		return def
	}
	return min(v, most)
}

func (s *Server) exec(ctx context.Context, _ *mcp.CallToolRequest, in ExecIn) (*mcp.CallToolResult, ExecOut, error) {
	if len(in.Argv) == 0 {
		return nil, ExecOut{}, errors.New("argv: required")
	}
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, ExecOut{}, err
	}
	timeout := defaultTimeout
	if in.TimeoutSeconds > 0 {
		timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := s.opt.Client.Exec(ctx, v.ID, api.ExecRequest{Argv: in.Argv, Env: in.Env, Dir: in.Cwd})
	if err != nil {
		return nil, ExecOut{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	sc := stream.NewConn(conn)
	go func() {
		if in.Stdin != "" {
			if _, err := sc.Pump(stream.Stdin, strings.NewReader(in.Stdin)); err != nil {
				return
			}
		}
		_ = sc.WriteFrame(stream.StdinEOF, nil)
	}()
	most := clamp(in.MaxOutputBytes, DefaultMaxOutput, MaxOutput)
	stdout, stderr := &capped{max: most}, &capped{max: most}
	out := ExecOut{ExitCode: -1}
	var remote error
	done := errors.New("done")
	err = sc.Demux(map[stream.Kind]func(stream.Frame) error{
		stream.Stdout: stream.Sink{W: stdout}.Deliver,
		stream.Stderr: stream.Sink{W: stderr}.Deliver,
		stream.Exit: func(f stream.Frame) error {
			code, sig, err := stream.DecodeExit(f.Data)
			if err != nil {
				return err
			}
			out.ExitCode, out.Signal = int(code), sig
			return done
		},
		stream.Error: func(f stream.Frame) error {
			remote = errors.New(strings.ToValidUTF8(string(f.Data), "?"))
			return done
		},
	})
	out.Stdout, out.StdoutTruncated = strings.ToValidUTF8(stdout.buf.String(), "\uFFFD"), stdout.truncated
	out.Stderr, out.StderrTruncated = strings.ToValidUTF8(stderr.buf.String(), "\uFFFD"), stderr.truncated
	switch {
	case remote != nil:
		return nil, ExecOut{}, fmt.Errorf("exec: %w", remote)
	case out.ExitCode < 0 && ctx.Err() != nil:
		out.TimedOut = true
		return nil, out, nil
	case out.ExitCode < 0:
		if err == nil || errors.Is(err, done) {
			err = io.ErrUnexpectedEOF
		}
		return nil, ExecOut{}, fmt.Errorf("exec: stream ended without an exit status: %w", err)
	}
	return nil, out, nil
}

func (s *Server) readFile(ctx context.Context, _ *mcp.CallToolRequest, in ReadFileIn) (*mcp.CallToolResult, ReadFileOut, error) {
	if !path.IsAbs(in.Path) {
		return nil, ReadFileOut{}, fmt.Errorf("path %q: must be absolute", in.Path)
	}
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, ReadFileOut{}, err
	}
	body, err := s.opt.Client.DownloadFiles(ctx, v.ID, in.Path)
	if err != nil {
		return nil, ReadFileOut{}, err
	}
	defer body.Close()
	tr := tar.NewReader(body)
	hdr, err := tr.Next()
	if err != nil {
		return nil, ReadFileOut{}, fmt.Errorf("read %s: %w", in.Path, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, ReadFileOut{}, fmt.Errorf("read %s: not a regular file", in.Path)
	}
	most := clamp(in.MaxBytes, DefaultMaxFile, MaxFile)
	c := &capped{max: most}
	// The header's size is the guest's claim: read at most one byte past
	// the cap, whatever it says.
	if _, err := io.Copy(c, io.LimitReader(tr, int64(most)+1)); err != nil {
		return nil, ReadFileOut{}, fmt.Errorf("read %s: %w", in.Path, err)
	}
	b := c.buf.Bytes()
	out := ReadFileOut{Size: max(hdr.Size, 0), Truncated: c.truncated, Binary: !utf8.Valid(b)}
	out.Content = strings.ToValidUTF8(string(b), "\uFFFD")
	return nil, out, nil
}

func (s *Server) writeFile(ctx context.Context, _ *mcp.CallToolRequest, in WriteFileIn) (*mcp.CallToolResult, DoneOut, error) {
	if !path.IsAbs(in.Path) || path.Clean(in.Path) == "/" {
		return nil, DoneOut{}, fmt.Errorf("path %q: must be an absolute file path", in.Path)
	}
	mode := int64(0o644)
	if in.Mode != 0 {
		if in.Mode < 0 || in.Mode > 0o777 {
			return nil, DoneOut{}, fmt.Errorf("mode %o: want permission bits between 0 and 0777", in.Mode)
		}
		mode = int64(in.Mode)
	}
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, DoneOut{}, err
	}
	clean := path.Clean(in.Path)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Base(clean), Mode: mode, Size: int64(len(in.Content)), ModTime: time.Now()}); err != nil {
		return nil, DoneOut{}, err
	}
	if _, err := io.WriteString(tw, in.Content); err != nil {
		return nil, DoneOut{}, err
	}
	if err := tw.Close(); err != nil {
		return nil, DoneOut{}, err
	}
	if err := s.opt.Client.UploadFiles(ctx, v.ID, path.Dir(clean), &buf); err != nil {
		return nil, DoneOut{}, err
	}
	return nil, DoneOut{Done: true}, nil
}

// listDirScript prints one line per entry of $1: type, size, octal mode and
// name, NUL-terminated so no name can forge a line. It needs GNU find.
const listDirScript = `cd -- "$1" && find . -mindepth 1 -maxdepth 1 -printf '%y %s %m %P\0' | head -z -n 1001`

func (s *Server) listDir(ctx context.Context, req *mcp.CallToolRequest, in ListDirIn) (*mcp.CallToolResult, ListDirOut, error) {
	if !path.IsAbs(in.Path) {
		return nil, ListDirOut{}, fmt.Errorf("path %q: must be absolute", in.Path)
	}
	_, res, err := s.exec(ctx, req, ExecIn{VMRef: in.VMRef, Argv: []string{"sh", "-c", listDirScript, "sh", in.Path}, TimeoutSeconds: 60, MaxOutputBytes: 1 << 20})
	if err != nil {
		return nil, ListDirOut{}, err
	}
	if res.ExitCode != 0 {
		return nil, ListDirOut{}, fmt.Errorf("list %s: %s", in.Path, strings.TrimSpace(res.Stderr))
	}
	return nil, parseListing(res.Stdout, res.StdoutTruncated), nil
}

// parseListing decodes listDirScript's output; malformed records (the
// guest wrote them) are skipped.
func parseListing(out string, truncated bool) ListDirOut {
	res := ListDirOut{Entries: []DirEntry{}, Truncated: truncated}
	for _, rec := range strings.Split(out, "\x00") {
		f := strings.SplitN(rec, " ", 4)
		if len(f) != 4 || f[3] == "" {
			continue
		}
		var size int64
		if _, err := fmt.Sscan(f[1], &size); err != nil {
			continue
		}
		typ := map[string]string{"f": "file", "d": "dir", "l": "symlink"}[f[0]]
		if typ == "" {
			typ = "other"
		}
		if len(res.Entries) == 1000 {
			res.Truncated = true
			break
		}
		res.Entries = append(res.Entries, DirEntry{Name: f[3], Type: typ, Size: size, Mode: f[2]})
	}
	return res
}

func (s *Server) ports(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, PortsOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, PortsOut{}, err
	}
	ps, err := s.opt.Client.VMPorts(ctx, v.ID)
	if ps == nil {
		ps = []api.Port{}
	}
	return nil, PortsOut{Ports: ps}, err
}

func (s *Server) stats(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, StatsOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, StatsOut{}, err
	}
	st, err := s.opt.Client.Stats(ctx, v.ID)
	if err != nil {
		return nil, StatsOut{}, err
	}
	for i := range st {
		st[i].Error = capText(st[i].Error) // the agent's error can carry what the guest sent
	}
	return nil, StatsOut{Stats: st}, nil
}

// tail reads r to its end keeping the last n bytes; it reads at most
// limit bytes in all.
func tail(r io.Reader, n int, limit int64) (string, bool, error) {
	var keep []byte
	buf := make([]byte, 32<<10)
	var total int64
	lr := io.LimitReader(r, limit)
	for {
		m, err := lr.Read(buf)
		total += int64(m)
		keep = append(keep, buf[:m]...)
		if len(keep) > 2*n {
			keep = append(keep[:0], keep[len(keep)-n:]...)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", false, err
		}
	}
	truncated := len(keep) > n
	if truncated {
		keep = keep[len(keep)-n:]
	}
	return strings.ToValidUTF8(string(keep), "\uFFFD"), truncated || total > int64(n), nil
}

// maxLogRead bounds how much of a log a tail reads through.
const maxLogRead = 64 << 20

func (s *Server) logs(ctx context.Context, _ *mcp.CallToolRequest, in LogsIn) (*mcp.CallToolResult, LogsOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, LogsOut{}, err
	}
	body, err := s.opt.Client.VMLogs(ctx, v.ID, false)
	if err != nil {
		return nil, LogsOut{}, err
	}
	defer body.Close()
	text, trunc, err := tail(body, clamp(in.TailBytes, 16<<10, 1<<20), maxLogRead)
	return nil, LogsOut{Text: text, Truncated: trunc}, err
}

func (s *Server) sessionStart(ctx context.Context, _ *mcp.CallToolRequest, in SessionStartIn) (*mcp.CallToolResult, SessionOut, error) {
	if len(in.Argv) == 0 {
		return nil, SessionOut{}, errors.New("argv: required")
	}
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, SessionOut{}, err
	}
	sess, err := s.opt.Client.StartSession(ctx, v.ID, api.StartSessionRequest{Name: in.Name, Argv: in.Argv, Cwd: in.Cwd, Env: in.Env})
	return nil, SessionOut{Session: sess}, err
}

func (s *Server) sessionList(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, SessionsOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, SessionsOut{}, err
	}
	ss, err := s.opt.Client.Sessions(ctx, v.ID)
	if ss == nil {
		ss = []api.Session{}
	}
	return nil, SessionsOut{Sessions: ss}, err
}

func (s *Server) sessionLogs(ctx context.Context, _ *mcp.CallToolRequest, in SessionLogsIn) (*mcp.CallToolResult, LogsOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, LogsOut{}, err
	}
	body, err := s.opt.Client.SessionLogs(ctx, v.ID, in.Name, false)
	if err != nil {
		return nil, LogsOut{}, err
	}
	defer body.Close()
	text, trunc, err := tail(body, clamp(in.TailBytes, 16<<10, 1<<20), maxLogRead)
	return nil, LogsOut{Text: text, Truncated: trunc}, err
}

func (s *Server) sessionStop(ctx context.Context, _ *mcp.CallToolRequest, in SessionStopIn) (*mcp.CallToolResult, SessionOut, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, SessionOut{}, err
	}
	sess, err := s.opt.Client.StopSession(ctx, v.ID, in.Name, api.StopSessionRequest{Signal: in.Signal})
	return nil, SessionOut{Session: sess}, err
}
