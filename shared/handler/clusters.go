package handler

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/rekey-dev/rekey/shared/state"
)

// opened are the watched clusters of one invocation: those that could be opened, and those that
// could not with why. One unreachable cluster (deleted, another VPC, its API server down) does not
// stop the others, nor any alert: it is reported, and a transient failure fails the invocation at
// the end so that Function Compute (or the next tick) tries it again.
type opened struct {
	order    []string
	clusters map[string]Cluster
	failed   map[string]error
	fleet    *state.Fleet
}

// open opens every configured cluster it can.
func (h *base) open(ctx context.Context) *opened {
	o := &opened{clusters: map[string]Cluster{}, failed: map[string]error{}}
	var stores []*state.Store
	for _, t := range h.deps.Config.Targets {
		if _, dup := o.clusters[t.Cluster]; dup {
			continue
		}
		if _, dup := o.failed[t.Cluster]; dup {
			continue
		}
		c, err := h.deps.Clusters.Open(ctx, t.Cluster)
		if err != nil {
			o.failed[t.Cluster] = fmt.Errorf("open cluster %s: %w", t.Cluster, err)
			continue
		}
		c.ID = t.Cluster
		o.clusters[t.Cluster] = c
		o.order = append(o.order, t.Cluster)
		stores = append(stores, c.Store)
	}
	slices.Sort(o.order)
	f, err := state.NewFleet(stores...)
	if err != nil {
		// Distinct clusters make distinct stores: this is a bug, and no state is usable.
		for _, id := range o.order {
			o.failed[id] = err
		}
		o.order, o.clusters = nil, map[string]Cluster{}
		f, _ = state.NewFleet()
	}
	o.fleet = f
	return o
}

// fail marks cluster id unreachable for the rest of the invocation (its state could not be read).
func (o *opened) fail(id string, err error) {
	if _, ok := o.clusters[id]; !ok {
		return
	}
	o.failed[id] = err
	delete(o.clusters, id)
	o.order = slices.DeleteFunc(o.order, func(c string) bool { return c == id })
}

// unreachable describes the clusters that could not be opened or read, sorted: "c2: ...".
func (o *opened) unreachable() []string {
	out := make([]string, 0, len(o.failed))
	for id, err := range o.failed {
		out = append(out, id+": "+err.Error())
	}
	sort.Strings(out)
	return out
}

// faults returns the transient failures among the unreachable clusters (worth a retry).
func (o *opened) faults() []error {
	var out []error
	for _, id := range sortedKeys(o.failed) {
		if transient(o.failed[id]) {
			out = append(out, o.failed[id])
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func joinLines(s []string) string { return strings.Join(s, "; ") }
