package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testClock is a deterministic store clock that advances one second per
// reading.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	clk := &testClock{t: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)}
	s.Now = clk.Now
	return s
}

func testImage(id, name string) Image {
	return Image{ID: id, Name: name, Dir: "/images/" + id, Source: "debian:bookworm", SizeBytes: 1 << 30, Manifest: []byte(`{"init":"systemd"}`)}
}

func testVM(id, name string) VM {
	return VM{
		ID: id, Name: name, ImageID: "img1", VCPU: 2, MemoryMiB: 2048, DiskBytes: 8 << 30,
		VMM: VMMQEMU, State: StateCreating, DesiredState: StateRunning, AgentToken: "tok-" + id,
	}
}

func mustCreateVM(t testing.TB, s *Store, vm VM) {
	t.Helper()
	if err := s.CreateVM(context.Background(), vm); err != nil {
		t.Fatalf("CreateVM(%s): %v", vm.Name, err)
	}
}

func TestOpen_freshDatabase(t *testing.T) {
	s := openTest(t)
	v, err := s.SchemaVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) || v < 2 {
		t.Fatalf("schema version = %d, want %d (>= 2)", v, len(migrations))
	}
}

func TestOpen_reopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(ctx, testImage("img1", "debian")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.CountImages(ctx); err != nil || n != 1 {
		t.Fatalf("CountImages after reopen = %d, %v; want 1", n, err)
	}
}

func TestOpen_newerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 999"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := Open(ctx, path); err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer banger succeeded")
	}
}

func TestOpen_pragmasOnEveryConnection(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	const n = 4
	s.db.SetMaxOpenConns(n)
	// Hold n connections at once so the pool must open n distinct ones.
	var conns []*sql.Conn
	for range n {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for i, c := range conns {
		var fk, busy int
		var mode string
		if err := c.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if fk != 1 || busy != int(busyTimeout.Milliseconds()) || mode != "wal" {
			t.Errorf("conn %d: foreign_keys=%d busy_timeout=%d journal_mode=%s; want 1, %d, wal", i, fk, busy, mode, busyTimeout.Milliseconds())
		}
		c.Close()
	}
}

// seeds insert rows that are valid at a given schema version (the rows a
// user of that banger release could have), keyed by version.
var seeds = map[int][]string{
	1: {
		`INSERT INTO images (id, name, dir, source, size_bytes, manifest, created_at) VALUES ('img1', 'debian', '/i/img1', 'debian:bookworm', 42, '{"init":"systemd"}', '2024-05-06T07:08:09.000000000Z')`,
		`INSERT INTO vms (id, name, image_id, vcpu, memory_mib, disk_bytes, vmm, state, desired_state, ip, mac, cid, agent_token, last_error, created_at, updated_at, started_at)
		 VALUES ('vm1aaaa', 'old1', 'img1', 2, 1024, 4096, 'qemu', 'stopped', 'stopped', '10.77.0.2', '02:00:0a:4d:00:02', 3, 'tok', 'killed', '2024-05-06T07:08:09.000000000Z', '2024-05-06T07:08:10.000000000Z', NULL)`,
	},
	2: {
		`INSERT INTO leases (ip, vm_id, created_at) VALUES ('10.77.0.2', 'vm1aaaa', '2024-05-06T07:08:09.000000000Z')`,
		`INSERT INTO sessions (vm_id, name, command, cwd, env_names, pty, state, exit_code, diagnostics, created_at, updated_at)
		 VALUES ('vm1aaaa', 's1', '["sh","-c","sleep 1"]', '/root', '["HOME"]', 1, 'exited', 0, '', '2024-05-06T07:08:09.000000000Z', '2024-05-06T07:08:09.000000000Z')`,
		// Before 0004 a lost session was an exit without a code whose
		// diagnostics began with "lost:".
		`INSERT INTO sessions (vm_id, name, command, cwd, env_names, pty, state, exit_code, diagnostics, created_at, updated_at)
		 VALUES ('vm1aaaa', 'gone', '["agent"]', '/root', '[]', 0, 'exited', NULL, 'lost: the guest no longer runs this session (agent restart or VM reboot)', '2024-05-06T07:08:10.000000000Z', '2024-05-06T07:08:10.000000000Z')`,
		// An exit that only mentions the word keeps its state.
		`INSERT INTO sessions (vm_id, name, command, cwd, env_names, pty, state, exit_code, diagnostics, created_at, updated_at)
		 VALUES ('vm1aaaa', 'done', '["true"]', '/root', '[]', 0, 'exited', 3, 'lost: but it had exited', '2024-05-06T07:08:11.000000000Z', '2024-05-06T07:08:11.000000000Z')`,
	},
}

// TestMigrate_fromEveryVersion brings a database to each earlier schema
// version, fills it with rows valid at that version, opens it (migrating to
// the latest) and checks the rows survived.
func TestMigrate_fromEveryVersion(t *testing.T) {
	ctx := context.Background()
	for from := 0; from < len(migrations); from++ {
		t.Run(migrations[max(from-1, 0)].name+"+", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "banger.db")
			db, err := sql.Open("sqlite", dsn(path))
			if err != nil {
				t.Fatal(err)
			}
			if err := migrate(ctx, db, from); err != nil {
				t.Fatalf("migrate to %d: %v", from, err)
			}
			if v, _ := userVersion(ctx, db); v != from {
				t.Fatalf("user_version = %d, want %d", v, from)
			}
			for v := 1; v <= from; v++ {
				for _, q := range seeds[v] {
					if _, err := db.Exec(q); err != nil {
						t.Fatalf("seed v%d: %v", v, err)
					}
				}
			}
			db.Close()

			s, err := Open(ctx, path)
			if err != nil {
				t.Fatalf("Open from version %d: %v", from, err)
			}
			defer s.Close()
			if v, _ := s.SchemaVersion(ctx); v != len(migrations) {
				t.Fatalf("schema version = %d, want %d", v, len(migrations))
			}
			if from >= 1 {
				vm, err := s.GetVM(ctx, "old1")
				if err != nil {
					t.Fatal(err)
				}
				want := VM{ID: "vm1aaaa", Name: "old1", ImageID: "img1", VCPU: 2, MemoryMiB: 1024, DiskBytes: 4096, VMM: "qemu",
					State: "stopped", DesiredState: "stopped", IP: "10.77.0.2", MAC: "02:00:0a:4d:00:02", CID: 3, AgentToken: "tok",
					LastError: "killed", CreatedAt: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), UpdatedAt: time.Date(2024, 5, 6, 7, 8, 10, 0, time.UTC)}
				if diff := cmp.Diff(want, vm); diff != "" {
					t.Errorf("vm after migration (-want +got):\n%s", diff)
				}
				img, err := s.GetImage(ctx, "debian")
				if err != nil || img.SizeBytes != 42 || string(img.Manifest) != `{"init":"systemd"}` {
					t.Errorf("image after migration = %+v, %v", img, err)
				}
			}
			if from >= 2 {
				leases, err := s.ListLeases(ctx)
				if err != nil || len(leases) != 1 || leases[0].VMID != "vm1aaaa" || leases[0].IP.String() != "10.77.0.2" {
					t.Errorf("leases after migration = %+v, %v", leases, err)
				}
				sess, err := s.GetSession(ctx, "vm1aaaa", "s1")
				if err != nil || !cmp.Equal(sess.Command, []string{"sh", "-c", "sleep 1"}) || sess.ExitCode == nil || *sess.ExitCode != 0 {
					t.Errorf("session after migration = %+v, %v", sess, err)
				}
				gone, err := s.GetSession(ctx, "vm1aaaa", "gone")
				if err != nil || gone.State != SessionLost || gone.ExitCode != nil ||
					gone.Diagnostics != "the guest no longer runs this session (agent restart or VM reboot)" {
					t.Errorf("lost session after migration = %+v, %v; want state lost without the prefix", gone, err)
				}
				done, err := s.GetSession(ctx, "vm1aaaa", "done")
				if err != nil || done.State != SessionExited || done.Diagnostics != "lost: but it had exited" {
					t.Errorf("exited session after migration = %+v, %v; want it unchanged", done, err)
				}
			}
			// The migrated database accepts new rows of every kind.
			mustCreateVM(t, s, testVM("vm2bbbb", "new1"))
			if _, err := s.AllocateLease(ctx, "vm2bbbb", mustPrefix(t, "10.77.0.0/24"), mustAddr(t, "10.77.0.1")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestImage_crud(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := testImage("0123456789abcdef", "debian")
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetImage(ctx, "debian")
	if err != nil {
		t.Fatal(err)
	}
	img.CreatedAt = got.CreatedAt
	if got.CreatedAt.IsZero() {
		t.Error("CreatedAt not set from the clock")
	}
	if diff := cmp.Diff(img, got); diff != "" {
		t.Errorf("GetImage (-want +got):\n%s", diff)
	}
	for _, ref := range []string{"0123456789abcdef", "0123"} {
		if g, err := s.GetImage(ctx, ref); err != nil || g.ID != img.ID {
			t.Errorf("GetImage(%q) = %v, %v", ref, g.ID, err)
		}
	}
	if err := s.CreateImage(ctx, testImage("other", "debian")); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate image name: err = %v, want ErrConflict", err)
	}
	if err := s.CreateImage(ctx, Image{ID: "x", Name: "x", Dir: "/x", Manifest: []byte("{")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad manifest: err = %v, want ErrInvalid", err)
	}
	if err := s.CreateImage(ctx, testImage("img2", "alpine")); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListImages(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alpine" || list[1].Name != "debian" {
		t.Fatalf("ListImages = %+v, %v", list, err)
	}

	vm := testVM("vm0001", "t1")
	vm.ImageID = img.ID
	mustCreateVM(t, s, vm)
	users, err := s.ImageInUse(ctx, img.ID)
	if err != nil || !cmp.Equal(users, []string{"t1"}) {
		t.Errorf("ImageInUse = %v, %v", users, err)
	}
	if err := s.DeleteImage(ctx, img.ID); !errors.Is(err, ErrConflict) {
		t.Errorf("DeleteImage of an image in use: err = %v, want ErrConflict", err)
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, img.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteImage: err = %v, want ErrNotFound", err)
	}
	if n, err := s.CountImages(ctx); err != nil || n != 1 {
		t.Errorf("CountImages = %d, %v; want 1", n, err)
	}
}

func TestVM_roundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	vm := testVM("abcdef0123", "t1")
	vm.IP, vm.MAC, vm.CID, vm.LastError = "10.77.0.9", "02:00:0a:4d:00:09", 7, "boom"
	vm.NetPolicy = `{"mode":"allow","allow":["good.test"]}`
	vm.StartedAt = time.Date(2025, 2, 3, 4, 5, 6, 789, time.UTC)
	mustCreateVM(t, s, vm)
	got, err := s.GetVM(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Errorf("CreatedAt %v / UpdatedAt %v not set from the clock", got.CreatedAt, got.UpdatedAt)
	}
	vm.CreatedAt, vm.UpdatedAt = got.CreatedAt, got.UpdatedAt
	if diff := cmp.Diff(vm, got); diff != "" {
		t.Errorf("GetVM (-want +got):\n%s", diff)
	}
	list, err := s.ListVMs(ctx)
	if err != nil || len(list) != 1 || !cmp.Equal(list[0], vm) {
		t.Errorf("ListVMs = %+v, %v", list, err)
	}
	if n, err := s.CountVMs(ctx); err != nil || n != 1 {
		t.Errorf("CountVMs = %d, %v", n, err)
	}
	for name, want := range map[string]bool{"t1": true, "t2": false} {
		if got, err := s.NameTaken(ctx, name); err != nil || got != want {
			t.Errorf("NameTaken(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
}

func TestCreateVM_errors(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	first := testVM("id-first", "t1")
	first.CID = 5
	mustCreateVM(t, s, first)
	mod := func(f func(*VM)) VM { v := testVM("id-new", "t2"); f(&v); return v }
	tests := []struct {
		name string
		vm   VM
		want error
	}{
		{"duplicate name", mod(func(v *VM) { v.Name = "t1" }), ErrConflict},
		{"duplicate id", mod(func(v *VM) { v.ID = "id-first" }), ErrConflict},
		{"duplicate cid", mod(func(v *VM) { v.CID = 5 }), ErrConflict},
		{"reserved cid", mod(func(v *VM) { v.CID = 2 }), ErrInvalid},
		{"empty name", mod(func(v *VM) { v.Name = "" }), ErrInvalid},
		{"unknown state", mod(func(v *VM) { v.State = "paused" }), ErrInvalid},
		{"unknown desired state", mod(func(v *VM) { v.DesiredState = "failed" }), ErrInvalid},
		{"unknown vmm", mod(func(v *VM) { v.VMM = "bhyve" }), ErrInvalid},
		{"zero vcpu", mod(func(v *VM) { v.VCPU = 0 }), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.CreateVM(ctx, tt.vm); !errors.Is(err, tt.want) {
				t.Errorf("CreateVM = %v, want %v", err, tt.want)
			}
		})
	}
	if n, _ := s.CountVMs(ctx); n != 1 {
		t.Errorf("CountVMs = %d after rejected creates, want 1", n)
	}
}

func TestGetVM_refs(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for _, vm := range []VM{
		testVM("aaaa1111", "web"),
		testVM("aaaa2222", "worker"),
		testVM("bbbb3333", "db"),
		testVM("cccc4444", "bbbb"), // a name that looks like another VM's id prefix
	} {
		mustCreateVM(t, s, vm)
	}
	tests := []struct {
		ref, wantID string
		wantErr     error
		suggestions []string
	}{
		{ref: "aaaa1111", wantID: "aaaa1111"},
		{ref: "web", wantID: "aaaa1111"},
		{ref: "aaaa2", wantID: "aaaa2222"},
		{ref: "bbbb", wantID: "cccc4444"}, // exact name wins over id prefix
		{ref: "bbbb3", wantID: "bbbb3333"},
		{ref: "aaaa", wantErr: ErrAmbiguous},
		{ref: "aaa", wantErr: ErrNotFound}, // prefix too short
		{ref: "wbe", wantErr: ErrNotFound, suggestions: []string{"web"}},
		{ref: "work", wantErr: ErrNotFound, suggestions: []string{"worker"}},
		{ref: "wrker", wantErr: ErrNotFound, suggestions: []string{"worker"}},
		{ref: "zzzzzzzz", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			vm, err := s.GetVM(ctx, tt.ref)
			if tt.wantErr == nil {
				if err != nil || vm.ID != tt.wantID {
					t.Fatalf("GetVM(%q) = %q, %v; want %q", tt.ref, vm.ID, err, tt.wantID)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("GetVM(%q) err = %v, want %v", tt.ref, err, tt.wantErr)
			}
			var nf *NotFoundError
			if errors.As(err, &nf) {
				if nf.Kind != "vm" || nf.Ref != tt.ref || !cmp.Equal(nf.Suggestions, tt.suggestions) {
					t.Errorf("NotFoundError = %+v, want suggestions %v", nf, tt.suggestions)
				}
			}
			var am *AmbiguousError
			if errors.As(err, &am) && !cmp.Equal(am.Matches, []string{"web", "worker"}) {
				t.Errorf("AmbiguousError matches = %v", am.Matches)
			}
		})
	}
}

func TestUpdateVM(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	mustCreateVM(t, s, testVM("vm1", "t1"))
	mustCreateVM(t, s, testVM("vm2", "t2"))
	before, _ := s.GetVM(ctx, "vm1")
	got, err := s.UpdateVM(ctx, "vm1", func(vm *VM) error {
		vm.State, vm.IP, vm.NetPolicy = StateRunning, "10.77.0.2", `{"mode":"none"}`
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !got.UpdatedAt.After(before.UpdatedAt) {
		t.Errorf("UpdatedAt %v not bumped past %v", got.UpdatedAt, before.UpdatedAt)
	}
	if stored, _ := s.GetVM(ctx, "vm1"); !cmp.Equal(stored, got) {
		t.Errorf("stored %+v != returned %+v", stored, got)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateVM(ctx, "vm1", func(vm *VM) error { vm.State = StateFailed; return boom }); !errors.Is(err, boom) {
		t.Errorf("fn error not returned: %v", err)
	}
	if stored, _ := s.GetVM(ctx, "vm1"); stored.State != StateRunning {
		t.Errorf("state = %s after a failed fn, want unchanged", stored.State)
	}
	if _, err := s.UpdateVM(ctx, "vm1", func(vm *VM) error { vm.Name = "t2"; return nil }); !errors.Is(err, ErrConflict) {
		t.Errorf("rename onto a taken name: %v, want ErrConflict", err)
	}
	if _, err := s.UpdateVM(ctx, "vm1", func(vm *VM) error { vm.ID = "x"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Errorf("id change: %v, want ErrInvalid", err)
	}
	if _, err := s.UpdateVM(ctx, "nope", func(vm *VM) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing vm: %v, want ErrNotFound", err)
	}
}

// TestUpdateVM_concurrent increments a field from many goroutines: a lost
// update (two read-modify-writes interleaving) would leave it short.
func TestUpdateVM_concurrent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	mustCreateVM(t, s, testVM("vm1", "t1"))
	const workers, perWorker = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if _, err := s.UpdateVM(ctx, "vm1", func(vm *VM) error { vm.VCPU++; return nil }); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	vm, _ := s.GetVM(ctx, "vm1")
	if want := 2 + workers*perWorker; vm.VCPU != want {
		t.Errorf("vcpu = %d after %d increments from 2, want %d", vm.VCPU, workers*perWorker, want)
	}
}

func TestAllocateCID(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for i, name := range []string{"a", "b", "c"} {
		mustCreateVM(t, s, testVM(name+"-id", name))
		cid, err := s.AllocateCID(ctx, name+"-id")
		if err != nil || cid != uint32(3+i) {
			t.Fatalf("AllocateCID(%s) = %d, %v; want %d", name, cid, err, 3+i)
		}
	}
	if cid, err := s.AllocateCID(ctx, "b-id"); err != nil || cid != 4 {
		t.Errorf("AllocateCID again = %d, %v; want 4 (idempotent)", cid, err)
	}
	if err := s.DeleteVM(ctx, "a-id"); err != nil {
		t.Fatal(err)
	}
	mustCreateVM(t, s, testVM("d-id", "d"))
	if cid, err := s.AllocateCID(ctx, "d-id"); err != nil || cid != 3 {
		t.Errorf("AllocateCID after freeing 3 = %d, %v; want 3", cid, err)
	}
	mustCreateVM(t, s, testVM("e-id", "e"))
	if cid, err := s.AllocateCID(ctx, "e-id"); err != nil || cid != 6 {
		t.Errorf("AllocateCID = %d, %v; want 6", cid, err)
	}
	if _, err := s.AllocateCID(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("AllocateCID(missing) = %v, want ErrNotFound", err)
	}
}

func TestOpen_paths(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// '#' would start a fragment in a file: URI; the store opens plain paths.
	s, err := Open(ctx, filepath.Join(dir, "state#1 dir.db"))
	if err != nil {
		t.Fatalf("Open with '#' in the path: %v", err)
	}
	if err := s.CreateImage(ctx, testImage("img1", "debian")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, "state#1 dir.db")); err != nil {
		t.Errorf("database not at the given path: %v", err)
	}
	for _, p := range []string{"", filepath.Join(dir, "a?b.db")} {
		if s, err := Open(ctx, p); !errors.Is(err, ErrInvalid) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Open(%q) = %v, want ErrInvalid", p, err)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("NewID() = %q, want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}
