package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/api"
)

// hostileName is a flow name a guest chose: it retitles the terminal.
const hostileName = "\x1b]0;pwn\x07evil.test"

// netDaemon is the part of bangerd that egress commands use: create
// (recording the request), show, the policy and a flow log whose names
// and reasons a hostile guest wrote. The first read of the log sees two
// flows, later ones a third.
type netDaemon struct {
	mu      sync.Mutex
	creates []api.CreateVMRequest
	changes []api.NetChange
	afters  []uint64
	policy  api.NetPolicy
	flows   []api.Flow
}

func newNetDaemon(t *testing.T) *netDaemon {
	t.Helper()
	t.Setenv("BANGER_CONFIG", filepath.Join(t.TempDir(), "none.toml"))
	d := &netDaemon{
		policy: api.NetPolicy{Mode: api.NetAllow, Allow: []string{"good.test", "203.0.113.0/24:443"}},
		flows: []api.Flow{
			{Seq: 1, Time: time.Now(), Kind: api.FlowDNS, Verdict: api.FlowAllow, Name: "good.test", Addr: "203.0.113.9"},
			{Seq: 2, Time: time.Now(), Kind: api.FlowTLS, Verdict: api.FlowDeny, Name: hostileName, Addr: "\x1b[31m198.51.100.7", Port: 443, Reason: "not in the allow list\x1b[2J"},
			{Seq: 3, Time: time.Now(), Kind: api.FlowHTTP, Verdict: api.FlowDeny, Name: "second.test", Addr: "198.51.100.8", Port: 80, Reason: "not in the allow list"},
		},
	}
	vm := func(name string, p api.NetPolicy) api.VM {
		return api.VM{ID: "id-" + name, Name: name, State: "running", IP: "172.16.0.2", DNSName: name + ".vm", Net: p}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.VersionInfo{Version: "test", PID: 1, BuildStamp: time.Now().Add(time.Hour)})
	})
	mux.HandleFunc("POST "+api.PathVMs, func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateVMRequest
		json.NewDecoder(r.Body).Decode(&req)
		d.mu.Lock()
		d.creates = append(d.creates, req)
		d.mu.Unlock()
		json.NewEncoder(w).Encode(api.OperationRef{ID: "op-" + req.Name, Kind: "vm.create"})
	})
	mux.HandleFunc("GET "+api.PathOperationEvents, func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		req := d.creates[len(d.creates)-1]
		d.mu.Unlock()
		res, _ := json.Marshal(vm(req.Name, api.NetPolicy{Mode: req.Net, Allow: req.Allow}))
		json.NewEncoder(w).Encode(api.Event{Type: api.EventDone, Op: r.PathValue("id"), State: api.OpSucceeded, Result: res})
	})
	mux.HandleFunc("GET "+api.PathVM, func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		json.NewEncoder(w).Encode(vm(r.PathValue("ref"), d.policy))
	})
	status := func(ref string) api.NetStatus {
		return api.NetStatus{VM: ref, Policy: d.policy, Enforced: true, Allowed: 12, Denied: 3}
	}
	mux.HandleFunc("GET "+api.PathVMNet, func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		json.NewEncoder(w).Encode(status(r.PathValue("ref")))
	})
	mux.HandleFunc("POST "+api.PathVMNet, func(w http.ResponseWriter, r *http.Request) {
		var ch api.NetChange
		json.NewDecoder(r.Body).Decode(&ch)
		d.mu.Lock()
		defer d.mu.Unlock()
		d.changes = append(d.changes, ch)
		if ch.Mode != "" {
			d.policy.Mode = ch.Mode
		}
		d.policy.Allow = append(d.policy.Allow, ch.Allow...)
		d.policy.Allow = slices.DeleteFunc(d.policy.Allow, func(r string) bool { return slices.Contains(ch.Deny, r) })
		json.NewEncoder(w).Encode(status(r.PathValue("ref")))
	})
	mux.HandleFunc("GET "+api.PathVMNetLog, func(w http.ResponseWriter, r *http.Request) {
		after, err := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.Errorf(api.CodeInvalid, "after: %v", err))
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.afters = append(d.afters, after)
		visible := d.flows
		if len(d.afters) == 1 {
			visible = visible[:2]
		}
		out := api.NetLog{Flows: []api.Flow{}, Next: after, Lost: 5}
		for _, f := range visible {
			if f.Seq > after {
				out.Flows = append(out.Flows, f)
				out.Next = f.Seq
			}
		}
		json.NewEncoder(w).Encode(out)
	})
	serveFakeDaemon(t, mux)
	return d
}

func TestVMCreate_netFlags(t *testing.T) {
	d := newNetDaemon(t)
	for _, tc := range []struct {
		args      []string
		net       string
		allow     []string
		from      string
		nextSteps string
	}{
		// --allow alone means --net allow.
		{[]string{"vm", "create", "--name", "a", "--allow", "good.test", "--allow", "@github"}, api.NetAllow, []string{"good.test", "@github"}, "", "egress allow (good.test, @github)"},
		{[]string{"vm", "run", "--name", "b", "--net", "none"}, api.NetNone, nil, "", "egress none"},
		{[]string{"vm", "create", "--name", "c", "--net", "allow", "--allow", "203.0.113.0/24:443"}, api.NetAllow, []string{"203.0.113.0/24:443"}, "", "egress allow (203.0.113.0/24:443)"},
		// --from takes a policy too.
		{[]string{"vm", "create", "--name", "d", "--from", "web@s1", "--allow", "good.test:8000-8080"}, api.NetAllow, []string{"good.test:8000-8080"}, "web@s1", "egress allow"},
		// Without either flag the daemon's default applies.
		{[]string{"vm", "create", "--name", "e"}, "", nil, "", ""},
	} {
		_, errOut, code := runMain(t, tc.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errOut)
		}
		got := d.creates[len(d.creates)-1]
		if got.Net != tc.net || !slices.Equal(got.Allow, tc.allow) || got.From != tc.from {
			t.Errorf("%v sent net %q allow %q from %q; want %q %q %q", tc.args, got.Net, got.Allow, got.From, tc.net, tc.allow, tc.from)
		}
		if tc.nextSteps != "" && !strings.Contains(errOut, tc.nextSteps) {
			t.Errorf("%v: next steps do not show the policy (%q):\n%s", tc.args, tc.nextSteps, errOut)
		}
		if tc.nextSteps == "" && strings.Contains(errOut, "egress") {
			t.Errorf("%v: an open VM's next steps mention egress:\n%s", tc.args, errOut)
		}
	}
}

func TestVMNet_flagAndArgumentErrors(t *testing.T) {
	// Nothing here may reach a daemon: a command that tries fails on the
	// missing bangerd instead of printing the expected error.
	t.Setenv("BANGER_SOCKET", filepath.Join(t.TempDir(), "none.sock"))
	t.Setenv("BANGER_CONFIG", filepath.Join(t.TempDir(), "none.toml"))
	t.Setenv(EnvBangerdBin, filepath.Join(t.TempDir(), "no-bangerd"))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"vm", "create", "--net", "none", "--allow", "good.test"}, 1, "--allow with --net none"},
		{[]string{"vm", "run", "--net", "open", "--allow", "good.test"}, 1, "--allow with --net open"},
		{[]string{"vm", "create", "--from", "web@s1", "--net", "none", "--allow", "good.test"}, 1, "--allow with --net none"},
		{[]string{"vm", "create", "--net", "closed"}, 1, `--net "closed": want open, allow or none`},
		{[]string{"vm", "net"}, 2, "name a VM"},
		{[]string{"vm", "net", "web", "allow"}, 2, "allow: name at least one RULE"},
		{[]string{"vm", "net", "web", "deny"}, 2, "deny: name at least one RULE"},
		{[]string{"vm", "net", "web", "mode"}, 2, "mode: name one mode"},
		{[]string{"vm", "net", "web", "mode", "closed"}, 2, `mode "closed": want open, allow or none`},
		{[]string{"vm", "net", "web", "open"}, 2, `unknown action "open"`},
		{[]string{"vm", "net", "log"}, 2, "accepts 1 arg(s)"},
	} {
		_, errOut, code := runMain(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("banger %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

func TestVMNet_statusAndChanges(t *testing.T) {
	d := newNetDaemon(t)
	out, errOut, code := runMain(t, "vm", "net", "web")
	if code != 0 {
		t.Fatalf("vm net web: exit %d: %s", code, errOut)
	}
	want := "vm        web\n" +
		"mode      allow\n" +
		"enforced  yes\n" +
		"allow     good.test\n" +
		"          203.0.113.0/24:443\n" +
		"allowed   12\n" +
		"denied    3\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("vm net web (-want +got):\n%s", diff)
	}
	if len(d.changes) != 0 {
		t.Errorf("a read sent changes: %+v", d.changes)
	}

	for _, tc := range []struct {
		args []string
		want api.NetChange
	}{
		{[]string{"allow", "pkgs.example.org:443", "@github"}, api.NetChange{Allow: []string{"pkgs.example.org:443", "@github"}}},
		{[]string{"deny", "good.test"}, api.NetChange{Deny: []string{"good.test"}}},
		{[]string{"mode", "none"}, api.NetChange{Mode: api.NetNone}},
	} {
		var errOut string
		var code int
		out, errOut, code = runMain(t, append([]string{"vm", "net", "web"}, tc.args...)...)
		if code != 0 {
			t.Fatalf("vm net web %v: exit %d: %s", tc.args, code, errOut)
		}
		if diff := cmp.Diff(tc.want, d.changes[len(d.changes)-1]); diff != "" {
			t.Errorf("vm net web %v sent (-want +got):\n%s", tc.args, diff)
		}
		if sq := squeeze(out); !strings.HasPrefix(sq, "vm web\n") || !strings.Contains(sq, "\ndenied 3\n") {
			t.Errorf("vm net web %v does not print the resulting status:\n%s", tc.args, out)
		}
	}
	// The allow list is kept, unused, in mode none.
	if sq := squeeze(out); !strings.Contains(sq, "\nmode none\n") || !strings.Contains(sq, "\nallow (unused) 203.0.113.0/24:443\n pkgs.example.org:443\n @github\n") {
		t.Errorf("vm net web mode none printed:\n%s", out)
	}

	out, _, _ = runMain(t, "vm", "net", "web", "--json")
	var st api.NetStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.VM != "web" || st.Policy.Mode != api.NetNone || st.Denied != 3 {
		t.Errorf("vm net --json printed %q (%v)", out, err)
	}
}

// squeeze collapses runs of spaces, so tests need not know column widths.
func squeeze(s string) string {
	return regexp.MustCompile(` +`).ReplaceAllString(s, " ")
}

func TestVMShow_net(t *testing.T) {
	newNetDaemon(t)
	out, errOut, code := runMain(t, "vm", "show", "web")
	if code != 0 || !strings.Contains(out, "\nnet      allow (good.test, 203.0.113.0/24:443)\n") {
		t.Errorf("vm show: exit %d, %s\n%s", code, errOut, out)
	}
	out, _, _ = runMain(t, "vm", "show", "web", "--json")
	var v api.VM
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Net.Mode != api.NetAllow || len(v.Net.Allow) != 2 {
		t.Errorf("vm show --json: %+v (%v)", v.Net, err)
	}
}

func TestFormatPolicy(t *testing.T) {
	many := []string{"a.test", "b.test", "c.test", "d.test", "e.test", "f.test", "g.test", "h.test"}
	for _, tc := range []struct {
		p    api.NetPolicy
		want string
	}{
		{api.NetPolicy{}, "-"},
		{api.NetPolicy{Mode: api.NetOpen}, "open"},
		{api.NetPolicy{Mode: api.NetNone}, "none"},
		{api.NetPolicy{Mode: api.NetAllow}, "allow (nothing)"},
		{api.NetPolicy{Mode: api.NetAllow, Allow: []string{"good.test", "203.0.113.0/24:443"}}, "allow (good.test, 203.0.113.0/24:443)"},
		{api.NetPolicy{Mode: api.NetAllow, Allow: many}, "allow (a.test, b.test, c.test, d.test, e.test, f.test, +2 more)"},
		{api.NetPolicy{Mode: api.NetNone, Allow: []string{"good.test"}}, "none (unused allow rules: good.test)"},
	} {
		if got := formatPolicy(tc.p); got != tc.want {
			t.Errorf("formatPolicy(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestVMNetLog_sanitisesGuestText(t *testing.T) {
	newNetDaemon(t)
	out, errOut, code := runMain(t, "vm", "net", "log", "web")
	if code != 0 {
		t.Fatalf("vm net log: exit %d: %s", code, errOut)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("vm net log printed control bytes: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("want a header and two flows, got:\n%s", out)
	}
	// The text around the escape sequences survives, in its columns.
	for _, want := range []string{"tls", "deny", "evil.test", "198.51.100.7:443", "not in the allow list"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("flow line %q lacks %q", lines[2], want)
		}
	}
	if !strings.Contains(lines[1], "good.test") || !strings.Contains(lines[1], "203.0.113.9") || strings.Contains(lines[1], "203.0.113.9:") {
		t.Errorf("dns flow line %q", lines[1])
	}
	if !strings.Contains(errOut, "5 flows fell out of the bounded flow log") {
		t.Errorf("stderr does not note the lost flows: %q", errOut)
	}

	// --json is the NetLog; JSON escapes the guest's bytes itself.
	out, _, _ = runMain(t, "vm", "net", "log", "web", "--json")
	var lg api.NetLog
	if err := json.Unmarshal([]byte(out), &lg); err != nil || strings.ContainsAny(out, "\x1b\x07") {
		t.Fatalf("vm net log --json printed %q (%v)", out, err)
	}
	if len(lg.Flows) != 3 || lg.Flows[1].Name != hostileName || lg.Next != 3 || lg.Lost != 5 {
		t.Errorf("vm net log --json: %+v", lg)
	}
}

// cancelOn is an output that calls stop once it has seen want: the test's
// Ctrl-C, sent when the follow has printed what it should.
type cancelOn struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	stop func()
	once sync.Once
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(w.stop)
	}
	return len(p), nil
}

func TestVMNetLog_followUntilCanceled(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		interrupt bool // Ctrl-C rather than a canceled context
	}{
		{"json lines, context canceled", []string{"--json"}, false},
		{"text, ctrl-c", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newNetDaemon(t)
			// The deadline only ends a broken test; the follow must end
			// by the cancel.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			followCtx, stopFollow := context.WithCancel(ctx)
			defer stopFollow()
			intr := make(chan os.Signal, 1)
			out := &cancelOn{want: "second.test", stop: stopFollow}
			if tc.interrupt {
				out.stop = func() { intr <- os.Interrupt }
			}
			var errOut bytes.Buffer
			args := append([]string{"vm", "net", "log", "-f", "web"}, tc.args...)
			code := Main(followCtx, args, IOStreams{In: strings.NewReader(""), Out: out, ErrOut: &errOut, Interrupt: intr})
			if ctx.Err() != nil {
				t.Fatalf("the follow did not end when canceled; output:\n%s", out.buf.String())
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			d.mu.Lock()
			afters := slices.Clone(d.afters)
			d.mu.Unlock()
			// The second poll asks after the first answer's Next; a poll
			// may race the cancel, but none asks for flows already shown.
			if len(afters) < 2 || afters[0] != 0 || afters[1] != 2 || slices.ContainsFunc(afters[2:], func(a uint64) bool { return a != 3 }) {
				t.Errorf("polled with after = %v, want 0, 2 (then 3)", afters)
			}
			text := out.buf.String()
			if strings.ContainsAny(text, "\x1b\x07") {
				t.Errorf("follow printed control bytes: %q", text)
			}
			if !strings.Contains(errOut.String(), "5 flows fell out") {
				t.Errorf("stderr does not note the lost flows: %q", errOut.String())
			}
			if !tc.interrupt {
				var seqs []uint64
				for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
					var f api.Flow
					if err := json.Unmarshal([]byte(l), &f); err != nil {
						t.Fatalf("line %q is not a JSON flow: %v", l, err)
					}
					seqs = append(seqs, f.Seq)
				}
				if fmt.Sprint(seqs) != "[1 2 3]" {
					t.Errorf("JSON lines carry flows %v, want [1 2 3]", seqs)
				}
				return
			}
			if lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n"); len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME") {
				t.Errorf("want a header and three flows, got:\n%s", text)
			}
		})
	}
}
