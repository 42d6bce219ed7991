package handler

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestOneClusterPanicDoesNotStopTheOthers: the job of c1 panics (a bug below the handler); the
// off-peak invocation survives, reports c1 as an error with the panic, and still runs c2.
func TestOneClusterPanicDoesNotStopTheOthers(t *testing.T) {
	e := newEnv(t, nil)
	d := e.deps()
	d.Run = func(ctx context.Context, req JobRequest) (JobOutcome, error) {
		if req.Cluster.ID == c1 {
			var m map[string]int
			m[req.Job.ID]++ // a real runtime panic
		}
		return e.runner.run(ctx, req)
	}
	h, err := NewOffPeak(d)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatalf("Handle: %v (a panic is not a transient fault)", err)
	}
	if len(res.Clusters) != 2 {
		t.Fatalf("clusters = %+v", res.Clusters)
	}
	if r := res.Clusters[0]; r.Cluster != c1 || r.Status != clusterError || !strings.HasPrefix(r.Reason, "panic: ") || !strings.Contains(r.Reason, "nil map") {
		t.Fatalf("c1 = %+v, want an error with the panic", r)
	}
	if r := res.Clusters[1]; r.Cluster != c2 || r.Status != string(StatusDone) {
		t.Fatalf("c2 = %+v, want done", r)
	}
	if got := e.runner.clusters(); !slices.Equal(got, []string{c2}) {
		t.Fatalf("the runner ran on %v, want c2", got)
	}
	if !strings.Contains(e.logs.String(), "working on the cluster panicked") {
		t.Fatalf("the panic was not logged: %s", e.logs.String())
	}
}
