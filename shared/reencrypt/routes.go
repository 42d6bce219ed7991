package reencrypt

import (
	"sync"

	"k8s.io/client-go/metadata"
)

// Route is one connection to the API server that patches may go through. Behind a load balancer
// that pins each connection to one API server replica (ACK Pro's managed control plane), a route
// is one replica: spreading a pass over one route per replica makes every replica judge (and
// rewrite) its share of the objects, so a replica still on an old key version shows itself by
// rewriting objects the others left alone.
type Route struct {
	// Name identifies the route in the summary (package replicas: the replica's ID hash).
	Name string
	// Client patches (and re-reads) objects through this route's connection.
	Client metadata.Interface
}

// RouteSummary counts the outcomes of the objects patched through one route.
type RouteSummary struct {
	Route string `json:"route"`
	Counts
}

// routeTally counts outcomes per route. It is safe for concurrent use.
type routeTally struct {
	mu     sync.Mutex
	counts []Counts
}

// record counts one object of route i with outcome o.
func (t *routeTally) record(i int, o Outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts[i].count(o)
}

// summaries returns the counts per route, in Options.Routes order (nil without routes).
func (t *routeTally) summaries(routes []Route) []RouteSummary {
	if len(routes) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]RouteSummary, len(routes))
	for i, r := range routes {
		out[i] = RouteSummary{Route: r.Name, Counts: t.counts[i]}
	}
	return out
}

// route returns the client object number seq of the run is patched through, and its route index
// (-1 without routes).
func (r *run) route(seq uint64) (metadata.Interface, int) {
	if len(r.opts.Routes) == 0 {
		return r.client, -1
	}
	i := int(seq % uint64(len(r.opts.Routes)))
	return r.opts.Routes[i].Client, i
}
