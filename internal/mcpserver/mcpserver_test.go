package mcpserver

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
	"banger/internal/stream"
)

// fakeDaemon serves the part of bangerd's API the tools use, on a real
// unix socket, with a guest that misbehaves the ways a hostile one can:
// output past any cap, a file whose tar header lies about its size.
type fakeDaemon struct {
	mu       sync.Mutex
	vms      map[string]api.VM // by name
	deleted  []string
	uploaded map[string]string // guest path -> content
	execs    []api.ExecRequest
	callers  []string
	stdin    string
	results  map[string]json.RawMessage // by operation id, for operations that return no VM
	creates  []api.CreateVMRequest
	changes  []api.NetChange
	flows    []api.Flow // the flow log of every VM

	// Workspaces: the guest's /root/repo by VM id, the entries of the
	// last tar received (name -> content, "<dir>" or "-> target"), its
	// size, the force of each prepare, every workspace request, and the
	// repository the guest's bundles are made from.
	ws        map[string]api.WorkspaceStatus
	wsTar     map[string]string
	wsTarSize int64
	wsForce   []bool
	wsCalls   []string
	guestRepo string
}

func newFakeDaemon(t *testing.T) *api.Client {
	t.Helper()
	f := &fakeDaemon{
		vms:      map[string]api.VM{"other": {ID: "id-other", Name: "other", State: "running"}},
		uploaded: map[string]string{},
		results:  map[string]json.RawMessage{},
		ws:       map[string]api.WorkspaceStatus{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVMs, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		var out []api.VM
		for _, v := range f.vms {
			out = append(out, v)
		}
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST "+api.PathVMs, func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateVMRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		mode := req.Net
		if mode == "" {
			mode = api.NetOpen
			if len(req.Allow) > 0 {
				mode = api.NetAllow
			}
		}
		f.vms[req.Name] = api.VM{ID: "id-" + req.Name, Name: req.Name, State: "running", Spec: req.Spec, Net: api.NetPolicy{Mode: mode, Allow: req.Allow}}
		f.creates = append(f.creates, req)
		f.mu.Unlock()
		json.NewEncoder(w).Encode(api.OperationRef{ID: "op-" + req.Name, Kind: "vm.create"})
	})
	mux.HandleFunc("GET "+api.PathOperationEvents, func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.PathValue("id"), "op-")
		f.mu.Lock()
		res, ok := f.results[r.PathValue("id")]
		if !ok {
			res, _ = json.Marshal(f.vms[name])
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(api.Event{Type: api.EventDone, Op: r.PathValue("id"), State: api.OpSucceeded, Result: res})
	})
	lookup := func(w http.ResponseWriter, r *http.Request) (api.VM, bool) {
		ref := r.PathValue("ref")
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, v := range f.vms {
			if v.Name == ref || v.ID == ref {
				return v, true
			}
		}
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.Errorf(api.CodeNotFound, "vm %q not found", ref))
		return api.VM{}, false
	}
	mux.HandleFunc("GET "+api.PathVM, func(w http.ResponseWriter, r *http.Request) {
		if v, ok := lookup(w, r); ok {
			json.NewEncoder(w).Encode(v)
		}
	})
	for _, p := range []struct{ path, state string }{{api.PathVMPause, "paused"}, {api.PathVMResume, "running"}, {api.PathVMSuspend, "suspended"}} {
		mux.HandleFunc("POST "+p.path, func(w http.ResponseWriter, r *http.Request) {
			v, ok := lookup(w, r)
			if !ok {
				return
			}
			f.mu.Lock()
			v.State = p.state
			f.vms[v.Name] = v
			f.mu.Unlock()
			if p.path == api.PathVMPause {
				json.NewEncoder(w).Encode(v)
				return
			}
			json.NewEncoder(w).Encode(api.OperationRef{ID: "op-" + v.Name})
		})
	}
	mux.HandleFunc("POST "+api.PathVMFork, func(w http.ResponseWriter, r *http.Request) {
		v, ok := lookup(w, r)
		if !ok {
			return
		}
		var req api.ForkRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		var copies []api.VM
		for i := 1; i <= req.Count; i++ {
			c := api.VM{ID: fmt.Sprintf("id-%s-%d", req.Prefix, i), Name: fmt.Sprintf("%s-%d", req.Prefix, i), State: "running"}
			f.vms[c.Name] = c
			copies = append(copies, c)
		}
		f.results["op-fork-"+v.Name], _ = json.Marshal(copies)
		f.mu.Unlock()
		json.NewEncoder(w).Encode(api.OperationRef{ID: "op-fork-" + v.Name})
	})
	mux.HandleFunc("POST "+api.PathVMSnapshots, func(w http.ResponseWriter, r *http.Request) {
		v, ok := lookup(w, r)
		if !ok {
			return
		}
		var req api.SnapshotRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		f.results["op-snap-"+v.Name], _ = json.Marshal(api.Snapshot{Ref: v.Name + "@" + req.Name, VM: v.Name, VMID: v.ID, Name: req.Name})
		f.mu.Unlock()
		json.NewEncoder(w).Encode(api.OperationRef{ID: "op-snap-" + v.Name})
	})
	mux.HandleFunc("DELETE "+api.PathVM, func(w http.ResponseWriter, r *http.Request) {
		if v, ok := lookup(w, r); ok {
			f.mu.Lock()
			delete(f.vms, v.Name)
			f.deleted = append(f.deleted, v.Name)
			f.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	})
	netStatus := func(v api.VM) api.NetStatus {
		return api.NetStatus{VM: v.Name, Policy: v.Net, Enforced: v.Net.Mode != api.NetOpen, Allowed: 4, Denied: 2}
	}
	mux.HandleFunc("GET "+api.PathVMNet, func(w http.ResponseWriter, r *http.Request) {
		if v, ok := lookup(w, r); ok {
			json.NewEncoder(w).Encode(netStatus(v))
		}
	})
	mux.HandleFunc("POST "+api.PathVMNet, func(w http.ResponseWriter, r *http.Request) {
		v, ok := lookup(w, r)
		if !ok {
			return
		}
		var ch api.NetChange
		json.NewDecoder(r.Body).Decode(&ch)
		f.mu.Lock()
		f.changes = append(f.changes, ch)
		if ch.Mode != "" {
			v.Net.Mode = ch.Mode
		}
		v.Net.Allow = append(v.Net.Allow, ch.Allow...)
		v.Net.Allow = slices.DeleteFunc(v.Net.Allow, func(r string) bool { return slices.Contains(ch.Deny, r) })
		f.vms[v.Name] = v
		f.mu.Unlock()
		json.NewEncoder(w).Encode(netStatus(v))
	})
	mux.HandleFunc("GET "+api.PathVMNetLog, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := lookup(w, r); !ok {
			return
		}
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		f.mu.Lock()
		defer f.mu.Unlock()
		out := api.NetLog{Flows: []api.Flow{}, Lost: 9}
		for _, fl := range f.flows {
			if fl.Seq > after {
				out.Flows = append(out.Flows, fl)
			}
			out.Next = fl.Seq
		}
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST "+api.PathVMExec, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := lookup(w, r); !ok {
			return
		}
		var req api.ExecRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		f.execs = append(f.execs, req)
		f.callers = append(f.callers, r.Header.Get(api.HeaderCaller))
		f.mu.Unlock()
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		api.WriteUpgradeResponse(brw.Writer)
		brw.Flush()
		sc := stream.NewConn(conn)
		var in bytes.Buffer
		for {
			fr, err := sc.ReadFrame()
			if err != nil {
				return
			}
			if fr.Kind == stream.Stdin {
				in.Write(fr.Data)
			}
			if fr.Kind == stream.StdinEOF {
				break
			}
		}
		f.mu.Lock()
		f.stdin = in.String()
		f.mu.Unlock()
		switch req.Argv[0] {
		case "flood": // 3 MiB of stdout, far past the default cap
			chunk := bytes.Repeat([]byte("x"), 32<<10)
			for range 96 {
				sc.WriteFrame(stream.Stdout, chunk)
			}
			sc.WriteFrame(stream.Stderr, []byte("oops\n"))
			sc.WriteFrame(stream.Exit, stream.EncodeExit(3, ""))
		case "hang": // never answers
			io.Copy(io.Discard, conn)
		case "sh": // vm_list_dir's script: a listing with a forged record
			sc.WriteFrame(stream.Stdout, []byte("f 5 644 a.txt\x00d 4096 755 sub\x00garbage\x00l 7 777 link\x00"))
			sc.WriteFrame(stream.Exit, stream.EncodeExit(0, ""))
		default:
			sc.WriteFrame(stream.Stdout, []byte("hello\n"))
			sc.WriteFrame(stream.Exit, stream.EncodeExit(0, ""))
		}
	})
	mux.HandleFunc("GET "+api.PathVMFiles, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := lookup(w, r); !ok {
			return
		}
		// A header that claims 1 GiB, then 3 MiB of data and a cut.
		var hdr bytes.Buffer
		tw := tar.NewWriter(&hdr)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Base(r.URL.Query().Get("path")), Mode: 0o644, Size: 1 << 30})
		tw.Flush()
		w.Write(hdr.Bytes())
		chunk := bytes.Repeat([]byte("y"), 64<<10)
		for range 48 {
			w.Write(chunk)
		}
	})
	mux.HandleFunc("PUT "+api.PathVMFiles, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := lookup(w, r); !ok {
			return
		}
		tr := tar.NewReader(r.Body)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(tr)
			f.mu.Lock()
			f.uploaded[r.URL.Query().Get("dir")+"/"+h.Name] = fmt.Sprintf("%o:%s", h.Mode, b)
			f.mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET "+api.PathVMWorkspace, func(w http.ResponseWriter, r *http.Request) {
		v, ok := lookup(w, r)
		if !ok {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.wsCalls = append(f.wsCalls, "status "+v.Name)
		st := f.ws[v.ID]
		st.Path = "/root/repo"
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("PUT "+api.PathVMWorkspace, func(w http.ResponseWriter, r *http.Request) {
		v, ok := lookup(w, r)
		if !ok {
			return
		}
		body := &countReader{r: r.Body}
		got := map[string]string{}
		tr := tar.NewReader(body)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(api.Errorf(api.CodeInvalid, "bad tar: %v", err))
				return
			}
			switch h.Typeflag {
			case tar.TypeDir:
				got[h.Name] = "<dir>"
			case tar.TypeSymlink:
				got[h.Name] = "-> " + h.Linkname
			default:
				b, _ := io.ReadAll(tr)
				got[h.Name] = string(b)
			}
		}
		io.Copy(io.Discard, body)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.wsCalls = append(f.wsCalls, "prepare "+v.Name)
		f.wsTar, f.wsTarSize = got, body.n
		f.wsForce = append(f.wsForce, r.URL.Query().Get("force") == "1")
		st := api.WorkspaceStatus{Path: "/root/repo", Exists: true, Git: got[".git/HEAD"] != "", Branch: "main\x1b]0;pwned\x07", Head: strings.Repeat("a", 40)}
		f.ws[v.ID] = st
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET "+api.PathVMWorkspaceBundle, func(w http.ResponseWriter, r *http.Request) {
		v, ok := lookup(w, r)
		if !ok {
			return
		}
		f.mu.Lock()
		f.wsCalls = append(f.wsCalls, "bundle "+v.Name)
		repo := f.guestRepo
		f.mu.Unlock()
		argv := []string{"-C", repo, "bundle", "create", "-", "HEAD"}
		for _, x := range r.URL.Query()["exclude"] {
			argv = append(argv, "^"+x)
		}
		out, err := exec.Command("git", argv...).Output()
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(api.Errorf(api.CodeInternal, "bundle: %v", err))
			return
		}
		w.Write(out)
	})
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	fakes[sock] = f
	return &api.Client{Socket: sock}
}

var fakes = map[string]*fakeDaemon{}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// connect runs a server over c and returns an SDK client session to it.
func connect(t *testing.T, c *api.Client, all bool) *mcp.ClientSession {
	t.Helper()
	return connectWith(t, Options{Client: c, All: all})
}

// connectWith runs a server with opt (test version and defaults filled
// in) and returns an SDK client session to it.
func connectWith(t *testing.T, opt Options) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	opt.Version, opt.Defaults = "test", api.VMSpec{VCPU: 2, MemoryMiB: 1024, DiskBytes: 2 << 30}
	srv := New(opt)
	st, ct := mcp.NewInMemoryTransports()
	go srv.Run(ctx, st)
	cl := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil)
	cs, err := cl.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call invokes a tool and decodes its structured result into out; it
// returns the tool error text ("" on success).
func call(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, out any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.IsError {
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return b.String()
	}
	if out != nil {
		raw, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s result %s: %v", name, raw, err)
		}
	}
	return ""
}

func TestTools_scopeIsTheVMsThisServerCreated(t *testing.T) {
	c := newFakeDaemon(t)
	cs := connect(t, c, false)

	var created VMOut
	if e := call(t, cs, "vm_create", map[string]any{"name": "mine"}, &created); e != "" {
		t.Fatal(e)
	}
	if created.VM.Name != "mine" || created.VM.Spec.VCPU != 2 || created.VM.Spec.DiskBytes != 2<<30 {
		t.Errorf("created %+v: defaults not applied", created.VM)
	}
	var list VMsOut
	call(t, cs, "vm_list", nil, &list)
	if len(list.VMs) != 1 || list.VMs[0].Name != "mine" {
		t.Errorf("vm_list = %+v, want only mine", list.VMs)
	}
	for tool, args := range map[string]map[string]any{
		"vm_show":      {"vm": "other"},
		"vm_exec":      {"vm": "other", "argv": []string{"true"}},
		"vm_delete":    {"vm": "other"},
		"vm_read_file": {"vm": "other", "path": "/etc/hostname"},
		"vm_ports":     {"vm": "other"},
		"vm_stats":     {"vm": "other"},
		"session_list": {"vm": "other"},
		"vm_pause":     {"vm": "other"},
		"vm_resume":    {"vm": "other"},
		"vm_suspend":   {"vm": "other"},
		"vm_snapshot":  {"vm": "other"},
		"vm_fork":      {"vm": "other"},
		"vm_create":    {"name": "x", "from": "other@s1"},
		"vm_net":       {"vm": "other"},
		"vm_net_log":   {"vm": "other"},
	} {
		if e := call(t, cs, tool, args, nil); !strings.Contains(e, "only touches VMs it created") {
			t.Errorf("%s on a VM it did not create: %q", tool, e)
		}
	}
	// A VM that does not exist gets the same answer: scope does not leak
	// which names exist.
	if e := call(t, cs, "vm_show", map[string]any{"vm": "nope"}, nil); !strings.Contains(e, "only touches VMs it created") {
		t.Errorf("vm_show nope: %q", e)
	}
	for tool, want := range map[string]string{"vm_pause": "paused", "vm_suspend": "suspended", "vm_resume": "running"} {
		var out VMOut
		if e := call(t, cs, tool, map[string]any{"vm": "mine"}, &out); e != "" || out.VM.State != want {
			t.Errorf("%s mine: %q, state %q, want %s", tool, e, out.VM.State, want)
		}
	}
	// Snapshots and forks of its own VMs are its own.
	var snap SnapshotOut
	if e := call(t, cs, "vm_snapshot", map[string]any{"vm": "mine", "name": "s1"}, &snap); e != "" || snap.Snapshot.Ref != "mine@s1" {
		t.Errorf("vm_snapshot mine: %q %+v", e, snap.Snapshot)
	}
	var from VMOut
	if e := call(t, cs, "vm_create", map[string]any{"name": "again", "from": "mine@s1"}, &from); e != "" {
		t.Errorf("vm_create from mine@s1: %q", e)
	}
	if f := fakes[c.Socket]; f.creates[len(f.creates)-1].From != "id-mine@s1" {
		t.Errorf("create from sent %+v", f.creates[len(f.creates)-1])
	}
	var forked VMsOut
	if e := call(t, cs, "vm_fork", map[string]any{"vm": "mine", "count": 2, "prefix": "try"}, &forked); e != "" || len(forked.VMs) != 2 {
		t.Fatalf("vm_fork mine: %q %+v", e, forked.VMs)
	}
	for _, c := range forked.VMs {
		if e := call(t, cs, "vm_show", map[string]any{"vm": c.Name}, nil); e != "" {
			t.Errorf("copy %s is not in scope: %q", c.Name, e)
		}
	}
	if e := call(t, cs, "vm_delete", map[string]any{"vm": "mine"}, nil); e != "" {
		t.Fatal(e)
	}
	f := fakes[c.Socket]
	if len(f.deleted) != 1 || f.deleted[0] != "mine" {
		t.Errorf("deleted %v", f.deleted)
	}

	all := connect(t, c, true)
	var show VMOut
	if e := call(t, all, "vm_show", map[string]any{"vm": "other"}, &show); e != "" || show.VM.ID != "id-other" {
		t.Errorf("--all vm_show other: %q %+v", e, show.VM)
	}
}

func TestTools_execCapsWhatTheGuestSends(t *testing.T) {
	c := newFakeDaemon(t)
	cs := connect(t, c, true)
	var out ExecOut
	if e := call(t, cs, "vm_exec", map[string]any{"vm": "other", "argv": []string{"flood"}, "stdin": "input!", "cwd": "/srv", "env": []string{"A=1"}}, &out); e != "" {
		t.Fatal(e)
	}
	if out.ExitCode != 3 || len(out.Stdout) != DefaultMaxOutput || !out.StdoutTruncated || out.Stderr != "oops\n" || out.StderrTruncated {
		t.Errorf("exec = code %d, %d stdout bytes (truncated %v), stderr %q (truncated %v)",
			out.ExitCode, len(out.Stdout), out.StdoutTruncated, out.Stderr, out.StderrTruncated)
	}
	f := fakes[c.Socket]
	if f.stdin != "input!" || f.execs[0].Dir != "/srv" || f.execs[0].Env[0] != "A=1" {
		t.Errorf("the daemon got stdin %q, request %+v", f.stdin, f.execs[0])
	}
	if f.callers[0] != "mcp vm_exec" {
		t.Errorf("the daemon saw caller %q, want the tool named for its log", f.callers[0])
	}
	start := time.Now()
	if e := call(t, cs, "vm_exec", map[string]any{"vm": "other", "argv": []string{"hang"}, "timeout_seconds": 1}, &out); e != "" {
		t.Fatal(e)
	}
	if !out.TimedOut || time.Since(start) > 10*time.Second {
		t.Errorf("a command that never ends: timed_out=%v after %s", out.TimedOut, time.Since(start))
	}
}

func TestTools_files(t *testing.T) {
	c := newFakeDaemon(t)
	cs := connect(t, c, true)
	var rf ReadFileOut
	if e := call(t, cs, "vm_read_file", map[string]any{"vm": "other", "path": "/var/log/big"}, &rf); e != "" {
		t.Fatal(e)
	}
	if len(rf.Content) != DefaultMaxFile || !rf.Truncated {
		t.Errorf("a file whose header claims 1 GiB: %d bytes, truncated %v", len(rf.Content), rf.Truncated)
	}
	if e := call(t, cs, "vm_read_file", map[string]any{"vm": "other", "path": "relative"}, nil); !strings.Contains(e, "must be absolute") {
		t.Errorf("relative path: %q", e)
	}
	if e := call(t, cs, "vm_write_file", map[string]any{"vm": "other", "path": "/root/app/main.go", "content": "package main\n", "mode": 0o600}, nil); e != "" {
		t.Fatal(e)
	}
	if got := fakes[c.Socket].uploaded["/root/app/main.go"]; got != "600:package main\n" {
		t.Errorf("uploaded %q", got)
	}
	if e := call(t, cs, "vm_write_file", map[string]any{"vm": "other", "path": "/x", "content": "", "mode": 0o4755}, nil); !strings.Contains(e, "permission bits") {
		t.Errorf("set-uid mode: %q", e)
	}
	var ld ListDirOut
	if e := call(t, cs, "vm_list_dir", map[string]any{"vm": "other", "path": "/root"}, &ld); e != "" {
		t.Fatal(e)
	}
	want := []DirEntry{{"a.txt", "file", 5, "644"}, {"sub", "dir", 4096, "755"}, {"link", "symlink", 7, "777"}}
	if fmt.Sprint(ld.Entries) != fmt.Sprint(want) {
		t.Errorf("list_dir = %+v, want %+v", ld.Entries, want)
	}
}

func TestTools_destructiveOnesSaySo(t *testing.T) {
	cs := connect(t, newFakeDaemon(t), false)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tool := range res.Tools {
		seen[tool.Name] = true
		a := tool.Annotations
		if a == nil {
			t.Errorf("%s has no annotations", tool.Name)
			continue
		}
		destructive := a.DestructiveHint == nil || *a.DestructiveHint
		if destructive && !a.ReadOnlyHint && tool.Name != "vm_exec" && tool.Name != "session_start" &&
			!strings.HasPrefix(tool.Description, "DESTRUCTIVE") {
			t.Errorf("%s is destructive but its description does not say so: %q", tool.Name, tool.Description)
		}
		if tool.InputSchema == nil {
			t.Errorf("%s has no input schema", tool.Name)
		}
	}
	for _, name := range []string{"vm_create", "vm_list", "vm_show", "vm_delete", "vm_exec", "vm_read_file", "vm_write_file", "vm_list_dir", "vm_ports", "vm_stats", "vm_logs", "vm_net", "vm_net_log", "workspace_prepare", "workspace_status", "workspace_pull", "session_start", "session_list", "session_logs", "session_stop"} {
		if !seen[name] {
			t.Errorf("tool %s missing", name)
		}
	}
}

func TestTail(t *testing.T) {
	got, trunc, err := tail(strings.NewReader(strings.Repeat("a", 100)+"END"), 10, 1<<20)
	if err != nil || got != "aaaaaaaEND" || !trunc {
		t.Errorf("tail = %q %v %v", got, trunc, err)
	}
	got, trunc, _ = tail(strings.NewReader("short"), 10, 1<<20)
	if got != "short" || trunc {
		t.Errorf("short tail = %q %v", got, trunc)
	}
	// An endless log is read only up to the limit.
	got, _, _ = tail(io.MultiReader(strings.NewReader("x"), neverEnding{}), 4, 1000)
	if len(got) != 4 {
		t.Errorf("endless tail = %q", got)
	}
}

type neverEnding struct{}

func (neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'z'
	}
	return len(p), nil
}

func TestTools_net(t *testing.T) {
	c := newFakeDaemon(t)
	f := fakes[c.Socket]

	// Without --net-admin an agent may tighten but never loosen.
	plain := connect(t, c, false)
	for tool, args := range map[string]map[string]any{
		"vm_create":  {"name": "x", "net": "open"},
		"vm_create ": {"name": "x", "allow": []string{"evil.test"}},
	} {
		if e := call(t, plain, strings.TrimSpace(tool), args, nil); !strings.Contains(e, "--net-admin") {
			t.Errorf("%s %v without --net-admin: %q", tool, args, e)
		}
	}
	if len(f.creates) != 0 {
		t.Fatalf("a refused vm_create reached the daemon: %+v", f.creates)
	}
	var tight VMOut
	if e := call(t, plain, "vm_create", map[string]any{"name": "tight", "net": "none"}, &tight); e != "" {
		t.Fatalf("vm_create net none without --net-admin: %s", e)
	}
	for _, args := range []map[string]any{{"vm": "tight", "mode": "open"}, {"vm": "tight", "allow": []string{"evil.test"}}} {
		if e := call(t, plain, "vm_net", args, nil); !strings.Contains(e, "--net-admin") {
			t.Errorf("vm_net %v without --net-admin: %q", args, e)
		}
	}
	if len(f.changes) != 0 {
		t.Fatalf("a refused vm_net reached the daemon: %+v", f.changes)
	}
	if e := call(t, plain, "vm_net", map[string]any{"vm": "tight", "mode": "none"}, nil); e != "" {
		t.Errorf("vm_net mode none without --net-admin: %s", e)
	}
	f.changes = nil

	cs := connectWith(t, Options{Client: c, NetAdmin: true})

	// vm_create passes net and allow through.
	var created VMOut
	if e := call(t, cs, "vm_create", map[string]any{"name": "agent", "net": "allow", "allow": []string{"good.test", "@github"}}, &created); e != "" {
		t.Fatal(e)
	}
	if got := f.creates[len(f.creates)-1]; got.Net != api.NetAllow || !slices.Equal(got.Allow, []string{"good.test", "@github"}) {
		t.Errorf("vm_create sent net %q allow %q", got.Net, got.Allow)
	}
	if created.VM.Net.Mode != api.NetAllow {
		t.Errorf("created VM's policy %+v", created.VM.Net)
	}

	// Scope: the policy of a VM this server did not create is neither
	// read nor changed.
	for _, args := range []map[string]any{{"vm": "other"}, {"vm": "other", "mode": "open"}, {"vm": "nope", "allow": []string{"x.test"}}} {
		if e := call(t, cs, "vm_net", args, nil); !strings.Contains(e, "only touches VMs it created") {
			t.Errorf("vm_net %v: %q", args, e)
		}
	}
	if len(f.changes) != 0 {
		t.Fatalf("a refused vm_net reached the daemon: %+v", f.changes)
	}

	// No change fields: a read, not a change.
	var st api.NetStatus
	if e := call(t, cs, "vm_net", map[string]any{"vm": "agent"}, &st); e != "" {
		t.Fatal(e)
	}
	if len(f.changes) != 0 || st.VM != "agent" || st.Policy.Mode != api.NetAllow || !st.Enforced || st.Allowed != 4 || st.Denied != 2 {
		t.Errorf("vm_net read: %+v (changes %+v)", st, f.changes)
	}
	// A change round trip: what the tool was given reaches the daemon,
	// what the daemon answers reaches the model.
	if e := call(t, cs, "vm_net", map[string]any{"vm": "agent", "allow": []string{"pkgs.example.org:443"}, "deny": []string{"good.test"}}, &st); e != "" {
		t.Fatal(e)
	}
	want := api.NetChange{Allow: []string{"pkgs.example.org:443"}, Deny: []string{"good.test"}}
	if len(f.changes) != 1 || fmt.Sprint(f.changes[0]) != fmt.Sprint(want) {
		t.Errorf("daemon got changes %+v, want %+v", f.changes, want)
	}
	if !slices.Equal(st.Policy.Allow, []string{"@github", "pkgs.example.org:443"}) {
		t.Errorf("policy after the change: %+v", st.Policy)
	}
	if e := call(t, cs, "vm_net", map[string]any{"vm": "agent", "mode": "none"}, &st); e != "" || st.Policy.Mode != api.NetNone || f.changes[1].Mode != api.NetNone {
		t.Errorf("vm_net mode none: %q, %+v", e, st.Policy)
	}
	var show VMOut
	if call(t, cs, "vm_show", map[string]any{"vm": "agent"}, &show); show.VM.Net.Mode != api.NetNone {
		t.Errorf("vm_show after the change: %+v", show.VM.Net)
	}
}

func TestTools_netLogCapsWhatTheGuestSends(t *testing.T) {
	c := newFakeDaemon(t)
	f := fakes[c.Socket]
	cs := connect(t, c, true)
	long := strings.Repeat("é", MaxFlowText) // 2 bytes each: the cut falls mid-character
	for i := range MaxFlows + 20 {
		f.flows = append(f.flows, api.Flow{Seq: uint64(i + 1), Time: time.Unix(1700000000, 0).UTC(), Kind: api.FlowDNS, Verdict: api.FlowDeny,
			Name: long + ".evil.test", Addr: "203.0.113.7", Port: 443, Reason: "not allowed"})
	}
	var lg NetLogOut
	if e := call(t, cs, "vm_net_log", map[string]any{"vm": "other"}, &lg); e != "" {
		t.Fatal(e)
	}
	if len(lg.Flows) != MaxFlows || !lg.Truncated || lg.Next != MaxFlows || lg.Lost != 9 {
		t.Fatalf("first page: %d flows, truncated %v, next %d, lost %d", len(lg.Flows), lg.Truncated, lg.Next, lg.Lost)
	}
	first := lg.Flows[0]
	if len(first.Name) > MaxFlowText || !utf8.ValidString(first.Name) || !strings.HasSuffix(first.Name, "…") {
		t.Errorf("a long name came back as %d bytes: %q", len(first.Name), first.Name)
	}
	if first.Addr != "203.0.113.7" || first.Port != 443 || first.Reason != "not allowed" || first.Seq != 1 {
		t.Errorf("flow fields lost: %+v", first)
	}
	if e := call(t, cs, "vm_net_log", map[string]any{"vm": "other", "after": lg.Next}, &lg); e != "" {
		t.Fatal(e)
	}
	if len(lg.Flows) != 20 || lg.Truncated || lg.Flows[0].Seq != MaxFlows+1 || lg.Next != MaxFlows+20 {
		t.Errorf("second page: %d flows, truncated %v, next %d", len(lg.Flows), lg.Truncated, lg.Next)
	}
}
