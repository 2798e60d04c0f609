package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
)

// mcpCheck drives `banger mcp` over stdio with the SDK's own client, as a
// coding agent would: create a VM, exec in it, write and read back a file,
// and delete it. It boots one guest.
func (e *env) mcpCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := e.ns.Command(ctx, filepath.Join(e.bin, "banger"), "mcp")
	cmd.Env = e.envv
	cl := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "v0"}, nil)
	cs, err := cl.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	call := func(name string, args map[string]any, out any) {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.IsError {
			b, _ := json.Marshal(res.Content)
			t.Fatalf("%s: tool error %s", name, b)
		}
		raw, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s: %v: %s", name, err, raw)
		}
	}
	var created struct {
		VM struct {
			Name, State string
		} `json:"vm"`
	}
	call("vm_create", map[string]any{"name": "m1"}, &created)
	if created.VM.Name != "m1" || created.VM.State != "running" {
		t.Fatalf("vm_create = %+v", created.VM)
	}
	var ex struct {
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
	}
	call("vm_exec", map[string]any{"vm": "m1", "argv": []string{"sh", "-c", "cat; hostname; echo err >&2; exit 4"}, "stdin": "in:"}, &ex)
	if ex.ExitCode != 4 || ex.Stdout != "in:m1\n" || ex.Stderr != "err\n" {
		t.Errorf("vm_exec = %+v", ex)
	}
	var stats struct{ Stats []api.VMStats }
	call("vm_stats", map[string]any{"vm": "m1"}, &stats)
	if len(stats.Stats) != 1 || stats.Stats[0].VM != "m1" || stats.Stats[0].MemTotal == 0 || stats.Stats[0].VMMRSS == 0 {
		t.Errorf("vm_stats = %+v", stats)
	}
	var done struct{ Done bool }
	call("vm_write_file", map[string]any{"vm": "m1", "path": "/root/notes/a.txt", "content": "from mcp\n"}, &done)
	var rf struct {
		Content string `json:"content"`
	}
	call("vm_read_file", map[string]any{"vm": "m1", "path": "/root/notes/a.txt"}, &rf)
	if rf.Content != "from mcp\n" {
		t.Errorf("read back %q", rf.Content)
	}
	var ld struct {
		Entries []struct{ Name, Type string } `json:"entries"`
	}
	call("vm_list_dir", map[string]any{"vm": "m1", "path": "/root/notes"}, &ld)
	if len(ld.Entries) != 1 || ld.Entries[0].Name != "a.txt" || ld.Entries[0].Type != "file" {
		t.Errorf("vm_list_dir = %+v", ld.Entries)
	}
	// The VMs of other clients stay out of reach.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "vm_exec", Arguments: map[string]any{"vm": "t1", "argv": []string{"true"}}})
	if err != nil || !res.IsError {
		t.Errorf("vm_exec on t1 (not created by this server) was allowed: %v", err)
	}
	call("vm_delete", map[string]any{"vm": "m1"}, &done)
	if r := e.banger("", "vm", "show", "m1"); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("m1 still exists after vm_delete: %s", r.stdout)
	}
}
