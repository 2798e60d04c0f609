package daemon

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	"banger/internal/api"
	"banger/internal/egress"
	"banger/internal/store"
)

// netRoutes are the egress policy endpoints.
func (d *Daemon) netRoutes() []Route {
	return []Route{
		{"GET " + api.PathVMNet, d.handleNetStatus},
		{"POST " + api.PathVMNet, d.handleChangeNet},
		{"GET " + api.PathVMNetLog, d.handleNetLog},
	}
}

// netStatus renders a VM's policy and counters for the API.
func (d *Daemon) netStatus(vm store.VM, p egress.Policy) api.NetStatus {
	st := api.NetStatus{VM: vm.Name, Policy: p.API()}
	if d.egress != nil {
		st.Enforced = d.egress.Enforced(vm.ID)
		st.Allowed, st.Denied = d.egress.Counts(vm.ID)
	}
	return st
}

func (d *Daemon) handleNetStatus(w http.ResponseWriter, r *http.Request) error {
	vm, p, err := d.VMs.NetStatus(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d.netStatus(vm, p))
}

func (d *Daemon) handleChangeNet(w http.ResponseWriter, r *http.Request) error {
	var ch api.NetChange
	if err := readJSON(r, &ch); err != nil {
		return err
	}
	vm, p, err := d.VMs.ChangeNet(r.Context(), r.PathValue("ref"), ch)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d.netStatus(vm, p))
}

func (d *Daemon) handleNetLog(w http.ResponseWriter, r *http.Request) error {
	vm, err := d.Store.GetVM(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	var after uint64
	if s := r.URL.Query().Get("after"); s != "" {
		if after, err = strconv.ParseUint(s, 10, 64); err != nil {
			return api.Errorf(api.CodeInvalid, "after %q: not a sequence number", s)
		}
	}
	out := api.NetLog{Flows: []api.Flow{}, Next: after}
	if d.egress != nil {
		out = d.egress.Log(vm.ID, after)
	}
	return writeJSON(w, http.StatusOK, out)
}

// startProxy listens for policed guests' redirected HTTP and HTTPS on the
// gateway (a port the kernel picks) and tells the firewall where. A
// failure is logged: policed guests then reach no HTTP or HTTPS at all,
// which fails closed.
func (d *Daemon) startProxy(ctx context.Context, gateway netip.Addr) {
	l, err := net.Listen("tcp4", net.JoinHostPort(gateway.String(), "0"))
	if err != nil {
		d.Logger.Warn("egress proxy unavailable", logKeyErr, err)
		return
	}
	port := l.Addr().(*net.TCPAddr).Port
	proxy := &egress.Proxy{Engine: d.egress, Logger: d.Logger.With("component", "egress-proxy")}
	go func() {
		if err := proxy.Serve(d.runCtx, l); err != nil {
			d.Logger.Warn("egress proxy stopped", logKeyErr, err)
		}
	}()
	if err := d.hostNet.SetProxyPort(ctx, uint16(port)); err != nil {
		d.Logger.Warn("egress proxy port not in the firewall", logKeyErr, err)
	}
}
