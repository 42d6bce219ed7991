package state

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

func TestFleetRoutesDecisionsAndMergesSnapshots(t *testing.T) {
	ctx := context.Background()
	c1, c2 := rvClient(t), rvClient(t) // two clusters, two API servers
	s1, _ := newStore(t, c1, "c1")
	s2, _ := newStore(t, c2, "c2")
	f, err := NewFleet(s2, s1)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Clusters(); len(got) != 2 || got[0] != "c1" {
		t.Fatalf("Clusters() = %v, want sorted", got)
	}

	dec := rotateDecision("ev-1", job("c1", "key-a", "v2"), job("c2", "key-a", "v2"))
	r, err := f.Record(ctx, dec)
	if err != nil {
		t.Fatal(err)
	}
	if !r.First || len(r.Added) != 2 {
		t.Fatalf("Record = %+v, want First and a job per cluster", r)
	}
	for _, s := range []*Store{s1, s2} {
		jobs, err := s.Pending(ctx)
		if err != nil || len(jobs) != 1 || jobs[0].Cluster != s.Cluster() {
			t.Fatalf("cluster %s pending %+v (%v): want its own job only", s.Cluster(), jobs, err)
		}
	}

	alert := policy.Decision{Kind: policy.Alert, Event: events.DedupKey{Source: "acs.kms", ID: "ev-2"},
		Notice: &policy.Notice{Severity: policy.Critical, Clusters: []string{"c2", "c1"}}}
	var wg sync.WaitGroup
	firsts := make([]bool, 5)
	for i := range firsts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f.Record(ctx, alert)
			if err != nil {
				t.Error(err)
			}
			firsts[i] = r.First
		}()
	}
	wg.Wait()
	n := 0
	for _, first := range firsts {
		if first {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 5 deliveries of one alert were First, want exactly 1 (one notice)", n)
	}

	st, err := f.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 2 || !st.Handled[dec.Event] || !st.Handled[alert.Event] {
		t.Fatalf("merged snapshot %+v", st)
	}
	// The alert is recorded on every cluster it concerns, not only the first.
	if s2st, _ := s2.Snapshot(ctx); !s2st.Handled[alert.Event] {
		t.Fatal("the alert was not recorded on c2")
	}

	// Delivering the notice failed: forget the event so that FC's retry decides (and alerts) again.
	if err := f.Forget(ctx, alert.Event); err != nil {
		t.Fatal(err)
	}
	if r, err := f.Record(ctx, alert); err != nil || !r.First {
		t.Fatalf("Record after Forget: %+v %v, want First again", r, err)
	}
	if st, _ := f.Snapshot(ctx); !st.Handled[dec.Event] || len(st.Pending) != 2 {
		t.Fatalf("Forget touched other events or jobs: %+v", st)
	}

	if _, err := f.Record(ctx, rotateDecision("ev-3", job("c9", "k", "v"))); err == nil || !strings.Contains(err.Error(), "c9") {
		t.Fatalf("job for an unknown cluster: %v, want an error naming it", err)
	}
	if r, err := f.Record(ctx, policy.Decision{Kind: policy.Note, Event: events.DedupKey{Source: "acs.kms", ID: "n"}}); err != nil || !r.First {
		t.Fatalf("a note concerns no cluster: %+v %v, want First and no error", r, err)
	}
	if _, err := NewFleet(s1, s1); err == nil {
		t.Fatal("two stores of one cluster accepted")
	}
}
