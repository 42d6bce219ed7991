package handler

import (
	"context"
	"fmt"
	"slices"

	"github.com/rekey-dev/rekey/shared/state"
)

// opened are the watched clusters of one invocation.
type opened struct {
	order    []string
	clusters map[string]Cluster
	fleet    *state.Fleet
}

// open opens every configured cluster. Any failure fails the invocation: the decision needs every
// cluster's state (deduplication, verified versions), and a cluster that cannot be reached now is
// retried by Function Compute; a rotation missed for good is found by the off-peak version check.
func (h *base) open(ctx context.Context) (*opened, error) {
	o := &opened{clusters: map[string]Cluster{}}
	var stores []*state.Store
	for _, t := range h.deps.Config.Targets {
		if _, dup := o.clusters[t.Cluster]; dup {
			continue
		}
		c, err := h.deps.Clusters.Open(ctx, t.Cluster)
		if err != nil {
			return nil, fmt.Errorf("open cluster %s: %w", t.Cluster, err)
		}
		c.ID = t.Cluster
		o.clusters[t.Cluster] = c
		o.order = append(o.order, t.Cluster)
		stores = append(stores, c.Store)
	}
	slices.Sort(o.order)
	f, err := state.NewFleet(stores...)
	if err != nil {
		return nil, err
	}
	o.fleet = f
	return o, nil
}
