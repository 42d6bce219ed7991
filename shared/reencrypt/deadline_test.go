package reencrypt

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// TestRateLimiterDeadlineIsNotAFailure: with a client-side rate limit, requests the limiter will
// not start before the run's deadline are refused early ("would exceed context deadline"); their
// objects are not attempted, not failed.
func TestRateLimiterDeadlineIsNotAFailure(t *testing.T) {
	f := newFakeAPI(t, 200, "a")
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL, QPS: 20, Burst: 1}
	c, err := metadata.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(c, Options{Targets: []Target{secrets}, Strategy: Rewrite, Concurrency: 4, PageSize: 50, Retry: fastRetry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := e.Run(ctx)
	if err == nil || s.Complete {
		t.Fatalf("a run of 200 objects at 20 requests/s finished in 2s: %+v", s.Total)
	}
	if s.Total.Failed != 0 || s.Total.NotAttempted == 0 {
		t.Fatalf("totals %+v, failures %+v: want the objects cut off by the deadline not attempted, none failed", s.Total, s.Failures)
	}
}
