package replicas

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
)

var now = time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)

// fakeReplica is one API server: /metrics names it, and it answers the identity Lease list.
type fakeReplica struct {
	id     string // the API server ID (the Lease name)
	leases func(w http.ResponseWriter)
	noMetr bool
	srv    *httptest.Server
}

func (f *fakeReplica) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/metrics":
		if f.noMetr {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Reason: metav1.StatusReasonForbidden, Code: 403, Message: "forbidden"})
			return
		}
		fmt.Fprintf(w, "# HELP x y\nsome_metric 1\napiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash=%q,key_id_hash=\"sha256:aa\",provider_name=\"p\"} 1.7e9\n", HashID(f.id))
	case strings.HasSuffix(r.URL.Path, "/namespaces/kube-system/leases"):
		f.leases(w)
	default:
		http.NotFound(w, r)
	}
}

// lb dials the replicas in turn, one per new connection, as a load balancer that pins
// connections would.
type lb struct {
	mu    sync.Mutex
	addrs []string
	next  int
}

func (l *lb) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	l.mu.Lock()
	a := l.addrs[l.next%len(l.addrs)]
	l.next++
	l.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, a)
}

func leaseList(renewed map[string]time.Time) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		list := coordinationv1.LeaseList{TypeMeta: metav1.TypeMeta{Kind: "LeaseList", APIVersion: "coordination.k8s.io/v1"}}
		for name, at := range renewed {
			rt := metav1.NewMicroTime(at)
			list.Items = append(list.Items, coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: LeaseNamespace,
				Labels: map[string]string{IdentityLabel: IdentityValue}}, Spec: coordinationv1.LeaseSpec{RenewTime: &rt}})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list)
	}
}

func forbidden(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Reason: metav1.StatusReasonForbidden, Code: 403, Message: "leases is forbidden"})
}

// cluster starts n replicas behind a load balancer; leases answers the Lease list on each.
func cluster(t *testing.T, ids []string, leases func(w http.ResponseWriter), noMetrics bool) ([]*fakeReplica, *lb, *rest.Config) {
	t.Helper()
	var reps []*fakeReplica
	l := &lb{}
	for _, id := range ids {
		f := &fakeReplica{id: id, leases: leases, noMetr: noMetrics}
		f.srv = httptest.NewServer(f)
		t.Cleanup(f.srv.Close)
		reps = append(reps, f)
		l.addrs = append(l.addrs, strings.TrimPrefix(f.srv.URL, "http://"))
	}
	return reps, l, &rest.Config{Host: "http://apiserver.invalid:6443", QPS: -1, Dial: l.dial}
}

// TestDiscoverReachesEveryLiveReplica: two live replicas (and one whose Lease went stale) behind a
// load balancer: both are expected, both reached through a connection of their own, named by the
// hash of their Lease name as their metrics label them.
func TestDiscoverReachesEveryLiveReplica(t *testing.T) {
	ids := []string{"apiserver-aaaa", "apiserver-bbbb"}
	_, l, cfg := cluster(t, ids, leaseList(map[string]time.Time{
		"apiserver-aaaa": now.Add(-5 * time.Second), "apiserver-bbbb": now.Add(-20 * time.Second), "apiserver-gone": now.Add(-time.Hour),
	}), false)
	s, err := Discover(context.Background(), cfg, Options{Dial: l.dial, Clock: clocktesting.NewFakePassiveClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Known() || len(s.Expected) != 2 || len(s.Reached) != 2 || len(s.Missing()) != 0 || len(s.Routes()) != 2 {
		t.Fatalf("set %+v: want 2 expected (the stale Lease left out), 2 reached", s)
	}
	for _, r := range s.Reached {
		if r.ID != HashID(r.Lease) {
			t.Fatalf("replica %+v: its ID must be the hash of its Lease", r)
		}
	}
	if moved := s.Recheck(context.Background(), time.Second); len(moved) != 0 {
		t.Fatalf("recheck moved %v", moved)
	}
}

// TestRecheckCatchesAReDialledConnection: a connection re-dialled to another replica mid-pass is
// reported, so its counts are not credited to the replica it first reached.
func TestRecheckCatchesAReDialledConnection(t *testing.T) {
	ids := []string{"apiserver-aaaa", "apiserver-bbbb"}
	reps, l, cfg := cluster(t, ids, leaseList(map[string]time.Time{"apiserver-aaaa": now, "apiserver-bbbb": now}), false)
	s, err := Discover(context.Background(), cfg, Options{Dial: l.dial, Clock: clocktesting.NewFakePassiveClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Reached) != 2 {
		t.Fatalf("reached %+v", s.Reached)
	}
	s.Close() // the idle connections go; the next request of each route dials again
	l.mu.Lock()
	l.addrs = l.addrs[1:] // ... and every new connection lands on the second replica
	l.mu.Unlock()
	moved := s.Recheck(context.Background(), time.Second)
	if len(moved) != 1 || moved[0] != HashID(reps[0].id) {
		t.Fatalf("recheck moved %v, want only the route of %s", moved, reps[0].id)
	}
}

// TestDiscoverWithoutLeasesSaysTheCountIsUnknown: Leases not readable: the replicas reached are
// all Discover can name, and it says the number of replicas is not known.
func TestDiscoverWithoutLeasesSaysTheCountIsUnknown(t *testing.T) {
	_, l, cfg := cluster(t, []string{"apiserver-aaaa", "apiserver-bbbb", "apiserver-cccc"}, forbidden, false)
	s, err := Discover(context.Background(), cfg, Options{Dial: l.dial, Attempts: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Known() || !strings.Contains(s.Source, "may not list Leases") || len(s.Reached) != 3 || s.Attempts != 6 {
		t.Fatalf("set %+v: want unknown expected, 3 reached in 6 attempts", s)
	}
}

// TestDiscoverWithoutMetricsCannotTellConnectionsApart: /metrics forbidden: one connection,
// unidentified, and a note saying why; with a single live Lease that connection is its replica.
func TestDiscoverWithoutMetricsCannotTellConnectionsApart(t *testing.T) {
	_, l, cfg := cluster(t, []string{"apiserver-aaaa", "apiserver-bbbb"}, leaseList(map[string]time.Time{"apiserver-aaaa": now, "apiserver-bbbb": now}), true)
	s, err := Discover(context.Background(), cfg, Options{Dial: l.dial, Clock: clocktesting.NewFakePassiveClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Routes()) != 1 || s.Reached[0].ID != Unidentified || len(s.Missing()) != 2 || !strings.Contains(strings.Join(s.Notes, ";"), "/metrics") {
		t.Fatalf("set %+v: want one unidentified route, both replicas missing, a note naming /metrics", s)
	}

	_, l1, cfg1 := cluster(t, []string{"apiserver-solo"}, leaseList(map[string]time.Time{"apiserver-solo": now}), true)
	s1, err := Discover(context.Background(), cfg1, Options{Dial: l1.dial, Clock: clocktesting.NewFakePassiveClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if len(s1.Reached) != 1 || s1.Reached[0].ID != HashID("apiserver-solo") || len(s1.Missing()) != 0 {
		t.Fatalf("single replica: %+v, want it reached", s1)
	}
	// Without /metrics the recheck cannot ask which replica serves the connection; with one live
	// replica it need not: the pass's share stays credited to it (the e2e least-privilege case
	// once saw it credited to none, and the convergence layer WARN).
	if moved := s1.Recheck(context.Background(), time.Second); len(moved) != 0 {
		t.Fatalf("single replica without /metrics: recheck moved %v", moved)
	}
}
