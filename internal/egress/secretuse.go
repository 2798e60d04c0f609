package egress

import (
	"fmt"
	"net/netip"
)

// secretsOf returns the secrets of the VM bound at src: those that may
// go to host, and the others.
func (e *Engine) secretsOf(src netip.Addr, host string) (vmID string, match, others []Secret) {
	e.mu.Lock()
	g, ok := e.guests[src.Unmap()]
	if !ok {
		e.mu.Unlock()
		return "", nil, nil
	}
	vmID, names := g.vmID, g.pol.Secrets
	e.mu.Unlock()
	for _, n := range names {
		sec, ok := e.Secrets.Lookup(n)
		if !ok {
			continue
		}
		if sec.Covers(host) {
			match = append(match, sec)
		} else {
			others = append(others, sec)
		}
	}
	return vmID, match, others
}

// ca returns the egress CA of the VM vmID, loading it once.
func (e *Engine) ca(vmID string) (*CA, error) {
	e.mu.Lock()
	ca, ok := e.cas[vmID]
	load := e.CAs
	e.mu.Unlock()
	if ok {
		return ca, nil
	}
	if load == nil {
		return nil, fmt.Errorf("vm %s: no egress CA", vmID)
	}
	ca, err := load(vmID)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.cas[vmID] = ca
	e.mu.Unlock()
	return ca, nil
}
