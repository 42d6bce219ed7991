package state

import (
	"context"
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

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
	r, failed := f.Record(ctx, dec, true)
	if len(failed) != 0 || len(r.Added) != 2 {
		t.Fatalf("Record = %+v %v, want a job per cluster", r, failed)
	}
	for _, s := range []*Store{s1, s2} {
		jobs, err := s.Pending(ctx)
		if err != nil || len(jobs) != 1 || jobs[0].Cluster != s.Cluster() {
			t.Fatalf("cluster %s pending %+v (%v): want its own job only", s.Cluster(), jobs, err)
		}
	}
	st, failed := f.Snapshot(ctx)
	if len(failed) != 0 || len(st.Pending) != 2 || !st.Handled[dec.Event] {
		t.Fatalf("merged snapshot %+v %v", st, failed)
	}

	// An alert recorded without marking it handled (its notice not delivered yet) is decided again.
	alert := policy.Decision{Kind: policy.Alert, Event: events.DedupKey{Source: "acs.kms", ID: "ev-2"},
		Notice: &policy.Notice{Severity: policy.Critical, Clusters: []string{"c2", "c1"}}}
	if _, failed := f.Record(ctx, alert, false); len(failed) != 0 {
		t.Fatal(failed)
	}
	if st, _ := f.Snapshot(ctx); st.Handled[alert.Event] {
		t.Fatal("an alert not marked handled counts as handled")
	}
	if _, failed := f.Record(ctx, alert, true); len(failed) != 0 {
		t.Fatal(failed)
	}
	if st, _ := f.Snapshot(ctx); !st.Handled[alert.Event] {
		t.Fatal("the alert marked handled on every cluster does not count as handled")
	}

	// A job for a cluster the fleet cannot reach is an error for that cluster only.
	r, failed = f.Record(ctx, rotateDecision("ev-3", job("c9", "k", "v"), job("c1", "k", "v")), true)
	if len(failed) != 1 || failed["c9"] == nil || len(r.Added) != 1 {
		t.Fatalf("job for an unreachable cluster: %+v %v, want c9 failed and c1 recorded", r, failed)
	}
	if _, err := NewFleet(s1, s1); err == nil {
		t.Fatal("two stores of one cluster accepted")
	}
}

// TestFleetGoesOnPastAClusterThatFails: one cluster's state cannot be written: the others are
// recorded; its snapshot cannot be read: the others are merged, and no event counts as handled
// (that cluster may have missed it).
func TestFleetGoesOnPastAClusterThatFails(t *testing.T) {
	ctx := context.Background()
	c1, c2 := rvClient(t), rvClient(t)
	s1, _ := newStore(t, c1, "c1")
	s2, _ := newStore(t, c2, "c2")
	f, err := NewFleet(s1, s2)
	if err != nil {
		t.Fatal(err)
	}
	if _, failed := f.Record(ctx, rotateDecision("ev-0", job("c1", "k", "v1")), true); len(failed) != 0 {
		t.Fatal(failed)
	}
	down := func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd leader changed")
	}
	c2.PrependReactor("*", "configmaps", down)
	r, failed := f.Record(ctx, rotateDecision("ev-1", job("c1", "k", "v2"), job("c2", "k", "v2")), true)
	if len(failed) != 1 || failed["c2"] == nil || len(r.Added) != 1 || r.Added[0].Cluster != "c1" {
		t.Fatalf("Record with c2 down: %+v %v", r, failed)
	}
	st, failed := f.Snapshot(ctx)
	var se apierrors.APIStatus
	if len(failed) != 1 || !errors.As(failed["c2"], &se) || len(st.Pending) != 2 || len(st.Handled) != 0 {
		t.Fatalf("snapshot with c2 down: %+v %v: want c1's jobs, nothing handled, c2 named", st, failed)
	}
}
