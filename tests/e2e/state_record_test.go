package e2e

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

// stateConcurrentRecord: EventBridge delivers one event 5 times at once to 5 FC instances; each
// records the decision. The real API server's optimistic concurrency must leave one job per
// (cluster, key, version) and give First (the right to send the notice) to exactly one delivery,
// both when the state ConfigMap does not exist yet (concurrent creates) and when it does
// (concurrent updates).
func stateConcurrentRecord(t *testing.T, c *controlplane.Cluster) {
	ctx := context.Background()
	const cluster, n = "c-record", 5
	var conflicts atomic.Int64

	deliver := func(dec policy.Decision) []state.Recorded {
		t.Helper()
		stores := make([]*state.Store, n)
		for i := range stores {
			stores[i] = stateStore(t, userClient(t, c, functionUser, &conflicts), cluster, nil)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		out := make([]state.Recorded, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out[i], errs[i] = stores[i].Record(ctx, dec)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("delivery %d: %v", i, err)
			}
		}
		return out
	}
	count := func(rs []state.Recorded) (first, added int) {
		for _, r := range rs {
			if r.First {
				first++
			}
			added += len(r.Added)
		}
		return first, added
	}

	// The state does not exist yet: five concurrent creates.
	dec := stateDecision("ev-create-1", stateJob(cluster, "key-a", "v2"), stateJob(cluster, "key-b", ""))
	first, added := count(deliver(dec))
	if first != 1 || added != 2 {
		t.Fatalf("first event delivered %d times at once: %d First, %d jobs added; want 1 and 2", n, first, added)
	}

	// The state exists: five concurrent updates; one job is new, one already pending.
	dec = stateDecision("ev-create-2", stateJob(cluster, "key-a", "v2"), stateJob(cluster, "key-c", "v3"))
	rs := deliver(dec)
	first, added = count(rs)
	if first != 1 || added != 1 {
		t.Fatalf("second event delivered %d times at once: %d First, %d jobs added; want 1 and 1", n, first, added)
	}
	for _, r := range rs {
		if len(r.Added)+len(r.Existing) != 2 {
			t.Fatalf("a delivery saw %+v: each job must be either added or existing", r)
		}
	}

	s := stateStore(t, userClient(t, c, functionUser, nil), cluster, nil)
	jobs, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 3 {
		t.Fatalf("pending %+v, want 3 distinct jobs", jobs)
	}
	st, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Handled) != 2 || len(st.Pending) != 3 {
		t.Fatalf("snapshot: %d handled, %d pending; want 2 and 3", len(st.Handled), len(st.Pending))
	}
	t.Logf("the API server answered 409 (conflict or already exists) %d times; each was re-read and re-applied", conflicts.Load())
}
