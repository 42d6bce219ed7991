package state

import (
	"context"
	"fmt"
	"sort"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

// Fleet is the state of several clusters, each kept in its own API server. It is safe for
// concurrent use.
type Fleet struct {
	stores map[string]*Store
	order  []string
}

// NewFleet groups the stores of distinct clusters.
func NewFleet(stores ...*Store) (*Fleet, error) {
	f := &Fleet{stores: make(map[string]*Store, len(stores))}
	for _, s := range stores {
		if s == nil {
			return nil, fmt.Errorf("state: nil store in fleet")
		}
		if _, dup := f.stores[s.cluster]; dup {
			return nil, fmt.Errorf("state: two stores for cluster %s", s.cluster)
		}
		f.stores[s.cluster] = s
		f.order = append(f.order, s.cluster)
	}
	sort.Strings(f.order)
	return f, nil
}

// Store returns a cluster's store.
func (f *Fleet) Store(cluster string) (*Store, bool) {
	s, ok := f.stores[cluster]
	return s, ok
}

// Clusters returns the clusters of the fleet, sorted.
func (f *Fleet) Clusters() []string { return append([]string(nil), f.order...) }

// Snapshot merges the snapshots of every cluster: an event handled on any cluster counts as
// handled. Aliases are the caller's to fill in.
func (f *Fleet) Snapshot(ctx context.Context) (policy.State, error) {
	st := policy.State{Handled: map[events.DedupKey]bool{}, Verified: map[policy.Target]string{}}
	for _, c := range f.order {
		one, err := f.stores[c].Snapshot(ctx)
		if err != nil {
			return policy.State{}, err
		}
		for k := range one.Handled {
			st.Handled[k] = true
		}
		for k, v := range one.Verified {
			st.Verified[k] = v
		}
		st.Pending = append(st.Pending, one.Pending...)
	}
	return st, nil
}

// Record records a decision in the state of every cluster it concerns (its jobs' clusters and its
// notice's), each store in one atomic update, in cluster order. First comes from the first of those
// clusters, so that of concurrent deliveries of one event exactly one is First and sends the
// notice. A decision that concerns no cluster (a note, an ignored event) writes nothing and is
// First unless ignored.
func (f *Fleet) Record(ctx context.Context, dec policy.Decision) (Recorded, error) {
	if dec.Kind == policy.Ignore {
		return Recorded{}, nil
	}
	jobs := map[string][]policy.Job{}
	for _, j := range dec.Jobs {
		jobs[j.Cluster] = append(jobs[j.Cluster], j)
	}
	concerned := map[string]bool{}
	for c := range jobs {
		concerned[c] = true
	}
	if dec.Notice != nil {
		for _, c := range dec.Notice.Clusters {
			concerned[c] = true
		}
	}
	clusters := make([]string, 0, len(concerned))
	for c := range concerned {
		if _, ok := f.stores[c]; !ok {
			return Recorded{}, fmt.Errorf("record decision on event %s: no state store for cluster %s", dec.Event, c)
		}
		clusters = append(clusters, c)
	}
	sort.Strings(clusters)
	if len(clusters) == 0 {
		return Recorded{First: true}, nil
	}
	var out Recorded
	for i, c := range clusters {
		one := dec
		one.Jobs = jobs[c]
		r, err := f.stores[c].Record(ctx, one)
		if err != nil {
			return out, err
		}
		if i == 0 {
			out.First = r.First
		}
		out.Added = append(out.Added, r.Added...)
		out.Existing = append(out.Existing, r.Existing...)
		out.AlreadyVerified = append(out.AlreadyVerified, r.AlreadyVerified...)
	}
	return out, nil
}

// Forget removes an event from the handled events of every cluster (see Store.Forget).
func (f *Fleet) Forget(ctx context.Context, ev events.DedupKey) error {
	for _, c := range f.order {
		if err := f.stores[c].Forget(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}
