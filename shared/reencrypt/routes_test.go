package reencrypt

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// laggingReplica serves f as a replica on another key would: every object a patch reaches is
// stale for it, so it rewrites every object it is asked to patch.
func laggingReplica(t *testing.T, f *fakeAPI) metadata.Interface {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			parts := strings.Split(r.URL.Path, "/") // /api/v1/namespaces/NS/secrets/NAME
			f.mu.Lock()
			f.stale[parts[4]+"/"+parts[6]] = true
			f.mu.Unlock()
		}
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := metadata.NewForConfig(&rest.Config{Host: srv.URL, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRoutesSpreadPatchesAndNameTheReplicaThatRewrites: with two routes, objects alternate between
// them in list order (each gets its share whatever the worker timing), and the per-route counts
// show which route rewrote objects the other found current: a replica on another key version.
func TestRoutesSpreadPatchesAndNameTheReplicaThatRewrites(t *testing.T) {
	const n = 21
	f := newFakeAPI(t, n, "a")
	for k := range f.stale {
		f.stale[k] = false // converged: every object current for the good replica
	}
	s := runOK(t, newEngine(t, f, func(o *Options) {
		o.Concurrency = 4
		o.Routes = []Route{{Name: "good", Client: f.client(t)}, {Name: "lagging", Client: laggingReplica(t, f)}}
	}))
	if len(s.Routes) != 2 {
		t.Fatalf("routes %+v, want 2", s.Routes)
	}
	good, lagging := s.Routes[0], s.Routes[1]
	if good.Route != "good" || lagging.Route != "lagging" || good.Listed != 11 || lagging.Listed != 10 {
		t.Fatalf("routes %+v: want objects 0,2,4... through good (11) and 1,3,5... through lagging (10)", s.Routes)
	}
	if good.Current != 11 || good.Rewritten != 0 || lagging.Rewritten != 10 || lagging.Current != 0 {
		t.Fatalf("routes %+v: want the lagging route to have rewritten its 10, the good one none", s.Routes)
	}
	if s.Total.Rewritten != 10 || s.Total.Current != 11 {
		t.Fatalf("total %+v", s.Total)
	}
	if lists := f.callCount("LIST"); lists == 0 {
		t.Fatal("no list went through the engine's own client")
	}
}

// TestRouteWithoutClientIsRefused: a route must have a client.
func TestRouteWithoutClientIsRefused(t *testing.T) {
	f := newFakeAPI(t, 1, "a")
	if _, err := New(f.client(t), Options{Targets: []Target{secrets}, Strategy: Rewrite, Routes: []Route{{Name: "x"}}}); err == nil {
		t.Fatal("a route without a client was accepted")
	}
}
