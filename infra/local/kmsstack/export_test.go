package kmsstack

// Pending is the newest version p has seen and not adopted yet ("" none), for tests that must
// know when p's Watch has handled a tick.
func (p *ACKPlugin) Pending() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}
