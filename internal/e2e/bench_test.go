package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/guestcontract"
	"banger/internal/layout"
)

// BenchmarkCreate measures `vm create` from request to agent ready, stage
// by stage, and compares it in the same run with the bare VMM booting the
// same kernel, initrd and disks (the exact argv banger used, a fresh
// overlay) to the same point: the guest agent answering. The ratio
// banger/bare is banger's overhead.
//
//	CI=true go test -run '^$' -bench Create -benchtime 3x ./internal/e2e/
func BenchmarkCreate(b *testing.B) {
	e := newEnv(b)
	e.ensureImage()
	e.must(e.banger("", "daemon", "status"))
	c := &api.Client{Socket: e.socket}
	ctx := context.Background()

	var stages stageTimes
	var total, bare time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("bench%d", i)
		took, _ := stages.create(b, c, name)
		total += took

		b.StopTimer()
		vm, err := c.GetVM(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		argv, err := procCmdline(vm.PID)
		if err != nil {
			b.Fatal(err)
		}
		token, err := identityToken(filepath.Join(vm.Dir, layout.ConfigDriveFile))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.StopVM(ctx, name); err != nil {
			b.Fatal(err)
		}
		// A fresh overlay, so the bare guest redoes its first boot too.
		if err := disk.MakeExt4(ctx, filepath.Join(vm.Dir, layout.OverlayFile), vm.Spec.DiskBytes, guestcontract.LabelOverlay, ""); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		d, err := e.bareBoot(ctx, argv, filepath.Join(vm.Dir, layout.AgentSocketFile), token)
		if err != nil {
			b.Fatal(err)
		}
		bare += d

		b.StopTimer()
		if err := c.DeleteVM(ctx, name, true); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	stages.report(b)
	b.ReportMetric(total.Seconds()/n, "s/create-to-ready")
	b.ReportMetric(bare.Seconds()/n, "s/bare-vmm-to-ready")
	b.ReportMetric(total.Seconds()/bare.Seconds(), "banger/bare")
}

// stageTimes sums the stage durations of the creates a benchmark makes,
// in the order the stages first appear.
type stageTimes struct {
	sum   map[string]time.Duration
	order []string
}

// create makes the VM name (2 vcpu, 1024 MiB, 2G disk, qemu) through the
// API, waits for it and adds its stages; it returns the wall time from
// request to ready and the stage names.
func (st *stageTimes) create(b *testing.B, c *api.Client, name string) (time.Duration, []string) {
	ctx := context.Background()
	start := time.Now()
	ref, err := c.CreateVM(ctx, api.CreateVMRequest{Name: name, VMM: "qemu",
		Spec: api.VMSpec{VCPU: 2, MemoryMiB: 1024, DiskBytes: 2 << 30}})
	if err != nil {
		b.Fatal(err)
	}
	done, err := c.WaitOperation(ctx, ref.ID, nil)
	if err != nil || done.State != api.OpSucceeded {
		b.Fatalf("create %s: %v %+v", name, err, done.Error)
	}
	took := time.Since(start)
	op, err := c.Operation(ctx, ref.ID)
	if err != nil {
		b.Fatal(err)
	}
	if st.sum == nil {
		st.sum = map[string]time.Duration{}
	}
	var names []string
	for _, s := range op.Stages {
		if _, ok := st.sum[s.Name]; !ok {
			st.order = append(st.order, s.Name)
		}
		st.sum[s.Name] += s.Duration
		names = append(names, s.Name)
		if s.Name == "agent ready" {
			b.Logf("%s: %s %s", name, s.Duration.Round(10*time.Millisecond), s.Detail)
		}
	}
	return took, names
}

// report reports each stage's mean duration as s/<stage>.
func (st *stageTimes) report(b *testing.B) {
	for _, s := range st.order {
		b.ReportMetric(st.sum[s].Seconds()/float64(b.N), "s/"+strings.ReplaceAll(s, " ", "-"))
	}
}

// bareBoot runs the VMM argv inside the test namespace and returns the
// time until the guest agent answers on agentSock; the VMM is killed
// afterwards.
func (e *env) bareBoot(ctx context.Context, argv []string, agentSock, token string) (time.Duration, error) {
	return e.bareBootThen(ctx, argv, agentSock, token, nil)
}

// bareBootThen is bareBoot calling ready (when set) with the VMM's PID
// once the agent answered, before the VMM is killed.
func (e *env) bareBootThen(ctx context.Context, argv []string, agentSock, token string, ready func(pid int)) (time.Duration, error) {
	return e.bareRun(ctx, argv, nil, agentSock, token, ready)
}

// bareRun is bareBootThen giving the VMM extra descriptors from fd 3 on
// (a restore's state file).
func (e *env) bareRun(ctx context.Context, argv []string, extra []*os.File, agentSock, token string, ready func(pid int)) (time.Duration, error) {
	os.Remove(agentSock)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := e.ns.Command(ctx, argv[0], argv[1:]...)
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("bare %s: %w", argv[0], err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	d := agentclient.NewSerialDialer(agentSock)
	defer d.Close()
	client := agentclient.NewClient(d, token)
	for {
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.Health(hctx)
		hcancel()
		if err == nil {
			d := time.Since(start)
			if ready != nil {
				ready(cmd.Process.Pid)
			}
			return d, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("bare boot: agent never answered: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // as often as banger asks
	}
}

// procCmdline returns the argv of a running process.
func procCmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
}

// identityToken reads the agent token from a config drive without
// mounting it.
func identityToken(configDrive string) (string, error) {
	out, err := exec.Command("debugfs", "-R", "cat /"+guestcontract.IdentityFile, configDrive).Output()
	if err != nil {
		return "", fmt.Errorf("read identity: %w", err)
	}
	var id agent.Identity
	if err := json.Unmarshal(out, &id); err != nil {
		return "", fmt.Errorf("decode identity: %w", err)
	}
	return id.Token, nil
}

// BenchmarkWarmCreate compares, in one run, banger's warm `vm create`
// (request to a VM restored from the image's warm template that answers
// with its own identity) with the bare VMM restoring the same template:
// the argv banger used, the template's disks copied back, the state on
// fd 3 and no -S (QEMU runs the guest as soon as it is loaded), until the
// agent answers to the template's token. banger/bare is banger's overhead
// on a warm start: checks, tap, config drive, re-identification, thaw.
//
//	CI=true go test -run '^$' -bench WarmCreate -benchtime 3x ./internal/e2e/
func BenchmarkWarmCreate(b *testing.B) {
	e := newEnv(b)
	e.ensureImage()
	e.must(e.banger("", "image", "warm"))
	c := &api.Client{Socket: e.socket}
	ctx := context.Background()
	ents, err := os.ReadDir(filepath.Join(e.state, layout.WarmDir))
	if err != nil || len(ents) != 1 {
		b.Fatalf("warm dir: %v %v", ents, err)
	}
	tdir := filepath.Join(e.state, layout.WarmDir, ents[0].Name())
	raw, err := os.ReadFile(filepath.Join(tdir, layout.TemplateFile))
	if err != nil {
		b.Fatal(err)
	}
	var tmpl struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(raw, &tmpl); err != nil {
		b.Fatal(err)
	}
	var stages stageTimes
	var total, bare time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("warm%d", i)
		took, names := stages.create(b, c, name)
		total += took
		if !slices.Contains(names, "restore") {
			b.Fatalf("create %s did not restore from the template", name)
		}

		b.StopTimer()
		vm, err := c.GetVM(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		argv, err := procCmdline(vm.PID)
		if err != nil {
			b.Fatal(err)
		}
		argv = slices.DeleteFunc(argv, func(a string) bool { return a == "-S" })
		if _, err := c.StopVM(ctx, name); err != nil {
			b.Fatal(err)
		}
		for _, f := range []string{layout.OverlayFile, layout.WorkFile, layout.ConfigDriveFile} {
			if _, err := disk.Clone(ctx, filepath.Join(tdir, f), filepath.Join(vm.Dir, f)); err != nil {
				b.Fatal(err)
			}
		}
		state, err := os.Open(filepath.Join(tdir, "vmstate"))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		// The state was saved with the guest stopped and QEMU keeps that
		// run state after loading it (with or without -S): it needs a
		// cont, as banger sends.
		qmpSock := filepath.Join(vm.Dir, layout.QMPSocketFile)
		os.Remove(qmpSock)
		contErr := make(chan error, 1)
		go func() { contErr <- qmpCont(ctx, qmpSock) }()
		d, err := e.bareRun(ctx, argv, []*os.File{state}, filepath.Join(vm.Dir, layout.AgentSocketFile), tmpl.Token, nil)
		if cerr := <-contErr; cerr != nil && err == nil {
			err = cerr
		}
		state.Close()
		if err != nil {
			b.Fatal(err)
		}
		bare += d

		b.StopTimer()
		if err := c.DeleteVM(ctx, name, true); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	stages.report(b)
	b.ReportMetric(total.Seconds()/n, "s/warm-create-to-ready")
	b.ReportMetric(bare.Seconds()/n, "s/bare-restore-to-agent")
	b.ReportMetric(total.Seconds()/bare.Seconds(), "banger/bare")
}

// qmpCont connects to a restoring QEMU's QMP socket (waiting for it to
// appear), waits until the incoming state is loaded and sends cont.
func qmpCont(ctx context.Context, sock string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var conn net.Conn
	for {
		var err error
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qmp %s: %w", sock, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	defer conn.Close()
	context.AfterFunc(ctx, func() { conn.Close() })
	dec := json.NewDecoder(conn)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return err
	}
	call := func(cmd string) (map[string]any, error) {
		if err := json.NewEncoder(conn).Encode(map[string]string{"execute": cmd}); err != nil {
			return nil, err
		}
		for {
			var msg struct {
				Return any            `json:"return"`
				Error  map[string]any `json:"error"`
				Event  string         `json:"event"`
			}
			if err := dec.Decode(&msg); err != nil {
				return nil, err
			}
			if msg.Event != "" {
				continue
			}
			if msg.Error != nil {
				return nil, fmt.Errorf("qmp %s: %v", cmd, msg.Error)
			}
			m, _ := msg.Return.(map[string]any)
			return m, nil
		}
	}
	if _, err := call("qmp_capabilities"); err != nil {
		return err
	}
	for {
		st, err := call("query-status")
		if err != nil {
			return err
		}
		if st["status"] == "paused" {
			_, err := call("cont")
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu never finished loading the state: status %v", st["status"])
		case <-time.After(5 * time.Millisecond):
		}
	}
}
