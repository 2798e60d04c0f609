package e2e

import (
	"context"
	"strings"
	"testing"

	"banger/internal/hostnet"
)

// TestCoexist runs two daemons, each with its own state dir and its own
// bridge, subnet and DNS port, in one network namespace, one VM each, and
// restarts each daemon in turn: neither removes or rewrites the other's
// nftables tables, bridge or tap, both VMs keep answering, and each
// guest resolves its own NAME.vm through its own daemon's DNS.
func TestCoexist(t *testing.T) {
	a := newEnv(t)
	b := newEnv(t, func(s string) string {
		s = strings.Replace(s, `bridge = "bgtest0"`, `bridge = "bgtest1"`, 1)
		s = strings.Replace(s, `subnet = "192.0.2.0/24"`, `subnet = "198.51.100.0/24"`, 1)
		return strings.Replace(s, `dns_listen = "127.0.0.1:42169"`, `dns_listen = "127.0.0.1:42170"`, 1)
	})
	// Both daemons in one namespace. b's own namespace stays unused; b's
	// daemon is stopped (b's cleanup runs first) before a's namespace goes.
	b.ns = a.ns
	a.ensureImage()
	b.ensureImage()

	type world struct {
		e              *env
		name, bridge   string
		ip, tap, table string
	}
	ws := []*world{{e: a, name: "coa", bridge: "bgtest0"}, {e: b, name: "cob", bridge: "bgtest1"}}
	for _, w := range ws {
		w.e.must(w.e.banger("", "vm", "create", "--name", w.name))
		v := w.e.vm(w.name)
		w.ip, _ = v["ip"].(string)
		id, _ := v["id"].(string)
		tap, err := hostnet.TapName(id)
		if err != nil {
			t.Fatalf("vm %s: %v", w.name, err)
		}
		w.tap, w.table = tap, hostnet.TableName(w.bridge)
		t.Cleanup(func() { w.e.banger("", "vm", "delete", w.name) })
	}

	// tables is a daemon's two tables as nft lists them.
	tables := func(w *world) string {
		t.Helper()
		var out []string
		for _, fam := range []string{hostnet.TableFamily, hostnet.BridgeTableFamily} {
			o, err := a.ns.Run(context.Background(), "nft", "list", "table", fam, w.table)
			if err != nil {
				t.Fatalf("%s's %s table: %v", w.bridge, fam, err)
			}
			out = append(out, string(o))
		}
		return strings.Join(out, "")
	}
	// check: both VMs answer, each resolves its own name through its own
	// daemon, and each tap sits on its own bridge.
	check := func(when string) {
		t.Helper()
		links := a.links()
		for _, w := range ws {
			w.e.must(w.e.banger("", "vm", "exec", w.name, "--", "true"))
			r := w.e.must(w.e.banger("", "vm", "exec", w.name, "--", "getent", "hosts", w.name+".vm"))
			if !strings.Contains(r.stdout, w.ip) {
				t.Errorf("%s: %s resolves %s.vm to %q, want %s", when, w.name, w.name, r.stdout, w.ip)
			}
			onBridge := false
			for _, l := range strings.Split(links, "\n") {
				if strings.Contains(l, " "+w.tap+":") && strings.Contains(l, " master "+w.bridge+" ") {
					onBridge = true
				}
			}
			if !onBridge {
				t.Errorf("%s: tap %s of %s not on %s:\n%s", when, w.tap, w.name, w.bridge, links)
			}
		}
		out, err := a.ns.Run(context.Background(), "nft", "list", "tables")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			for _, fam := range []string{hostnet.TableFamily, hostnet.BridgeTableFamily} {
				if want := "table " + fam + " " + w.table + "\n"; !strings.Contains(string(out), want) {
					t.Errorf("%s: nft list tables lacks %q:\n%s", when, strings.TrimSpace(want), out)
				}
			}
		}
	}
	check("both created")

	// Restart each daemon in turn (`daemon stop`, then any command starts
	// it again): the other's tables stay exactly as they were.
	for i, w := range ws {
		other := ws[1-i]
		before := tables(other)
		w.e.must(w.e.banger("", "daemon", "stop"))
		w.e.must(w.e.banger("", "vm", "list"))
		// The restarted daemon re-adopts its VM and re-applies its own
		// tables; the other daemon's are untouched.
		w.e.must(w.e.banger("", "vm", "exec", w.name, "--", "true"))
		if got := tables(other); got != before {
			t.Errorf("restarting %s's daemon rewrote %s's tables:\nbefore:\n%s\nafter:\n%s", w.bridge, other.bridge, before, got)
		}
		check("after restarting " + w.bridge + "'s daemon")
	}
}
