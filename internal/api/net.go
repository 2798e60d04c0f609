package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Egress policy endpoints.
const (
	PathVMNet    = "/v1/vms/{ref}/net"
	PathVMNetLog = "/v1/vms/{ref}/net/log"
)

// Network modes of a VM (CreateVMRequest.Net, NetPolicy.Mode).
const (
	NetOpen  = "open"  // the internet, less the default deny set (private ranges, the host)
	NetAllow = "allow" // only what NetPolicy.Allow names
	NetNone  = "none"  // nothing outside the host's DNS for .vm names
)

// NetPolicy is a VM's egress policy. Allow holds rules in their canonical
// form: HOST, *.DOMAIN, IPV4 or CIDR, each with an optional :PORT or
// :LOW-HIGH (presets are expanded when the policy is set).
type NetPolicy struct {
	Mode  string   `json:"mode"`
	Allow []string `json:"allow,omitempty"`
	// Secrets name the [[secret]]s the VM may use (never their values).
	Secrets []string `json:"secrets,omitempty"`
}

// NetStatus is a VM's policy and what it has done since the daemon started.
type NetStatus struct {
	VM     string    `json:"vm"`
	Policy NetPolicy `json:"policy"`
	// Enforced is true while the policy is in the host's firewall (the VM
	// runs and its policy is not open).
	Enforced bool `json:"enforced"`
	// Allowed and Denied count the flows (DNS answers, proxied
	// connections) the policy let through or refused.
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"`
}

// NetChange edits a VM's policy: Mode (when set) replaces the mode, then
// Allow rules are added and Deny rules removed. Presets (@NAME) expand.
type NetChange struct {
	Mode  string   `json:"mode,omitempty"`
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// Flow verdicts and kinds.
const (
	FlowAllow = "allow"
	FlowDeny  = "deny"

	FlowDNS   = "dns"   // a query to banger's resolver
	FlowTLS   = "tls"   // a TLS connection through the proxy, judged by SNI
	FlowHTTP  = "http"  // a plain HTTP connection through the proxy, judged by Host
	FlowProxy = "proxy" // a connection the proxy could not classify
	FlowIP    = "ip"    // a packet the firewall dropped (UDP, an address not answered, an unproxied port)
)

// Flow is one entry of a VM's flow log.
type Flow struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Verdict string    `json:"verdict"`
	Name    string    `json:"name,omitempty"` // queried name, SNI or Host
	Addr    string    `json:"addr,omitempty"` // destination address, or answered addresses
	Port    int       `json:"port,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

// NetLog is a page of a VM's flow log: the flows with Seq > after, oldest
// first. Next is the Seq to ask after next time; Lost counts flows that
// fell out of the bounded log before they were read.
type NetLog struct {
	Flows []Flow `json:"flows"`
	Next  uint64 `json:"next"`
	Lost  uint64 `json:"lost,omitempty"`
}

// NetStatus returns the egress policy of the VM ref.
func (c *Client) NetStatus(ctx context.Context, ref string) (NetStatus, error) {
	var out NetStatus
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMNet, ref), nil, &out)
	return out, err
}

// ChangeNet edits the egress policy of the VM ref and returns the result;
// a running VM gets the new policy at once.
func (c *Client) ChangeNet(ctx context.Context, ref string, ch NetChange) (NetStatus, error) {
	var out NetStatus
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMNet, ref), ch, &out)
	return out, err
}

// NetLog returns the flows of the VM ref logged after seq after.
func (c *Client) NetLog(ctx context.Context, ref string, after uint64) (NetLog, error) {
	var out NetLog
	q := url.Values{"after": {strconv.FormatUint(after, 10)}}
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMNetLog, ref)+"?"+q.Encode(), nil, &out)
	return out, err
}
