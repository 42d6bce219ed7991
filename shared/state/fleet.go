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

// Snapshot merges the snapshots of the clusters whose state can be read; the others are returned
// with their errors, and the merged snapshot does not depend on them. An event counts as handled
// only when every cluster of the fleet recorded it (Record marks it in every cluster), so that a
// cluster that missed it decides it again.
func (f *Fleet) Snapshot(ctx context.Context) (policy.State, map[string]error) {
	st := policy.State{Handled: map[events.DedupKey]bool{}, Verified: map[policy.Target]string{}}
	failed := map[string]error{}
	count := map[events.DedupKey]int{}
	read := 0
	for _, c := range f.order {
		one, err := f.stores[c].Snapshot(ctx)
		if err != nil {
			failed[c] = err
			continue
		}
		read++
		for k := range one.Handled {
			count[k]++
		}
		for k, v := range one.Verified {
			st.Verified[k] = v
		}
		st.Pending = append(st.Pending, one.Pending...)
	}
	for k, n := range count {
		if n == read && len(failed) == 0 {
			st.Handled[k] = true
		}
	}
	return st, failed
}

// Record records a decision in every cluster of the fleet, each independently in one atomic update:
// its jobs in their clusters and, when markHandled, its event as handled everywhere (so that a
// redelivery is ignored only once every cluster has it). A cluster whose state cannot be written,
// and a cluster a job names that is not in the fleet (not reachable), is returned with its error;
// the others are recorded all the same.
func (f *Fleet) Record(ctx context.Context, dec policy.Decision, markHandled bool) (Recorded, map[string]error) {
	failed := map[string]error{}
	if dec.Kind == policy.Ignore {
		return Recorded{}, failed
	}
	jobs := map[string][]policy.Job{}
	for _, j := range dec.Jobs {
		if _, ok := f.stores[j.Cluster]; !ok {
			failed[j.Cluster] = fmt.Errorf("record decision on event %s: the state of cluster %s is not reachable", dec.Event, j.Cluster)
			continue
		}
		jobs[j.Cluster] = append(jobs[j.Cluster], j)
	}
	var out Recorded
	for _, c := range f.order {
		if len(jobs[c]) == 0 && !markHandled {
			continue
		}
		ev := events.DedupKey{}
		if markHandled {
			ev = dec.Event
		}
		r, err := f.stores[c].record(ctx, ev, jobs[c])
		if err != nil {
			failed[c] = err
			continue
		}
		out.Added = append(out.Added, r.Added...)
		out.Existing = append(out.Existing, r.Existing...)
		out.AlreadyVerified = append(out.AlreadyVerified, r.AlreadyVerified...)
	}
	return out, failed
}
