package handler

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/state"
)

// TestCriticalAlertCarriesDependentObjects: the DisableKey alert says, per cluster at risk, how
// many Secrets depend on the key and how many are known to be under older versions: c1 has the
// primary version verified (0 older), c2 has a job in progress and cannot be counted.
func TestCriticalAlertCarriesDependentObjects(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	md, err := e.kms.DescribeKey(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	v1 := md.PrimaryKeyVersion
	e.verify(c1, v1)
	e.verify(c2, v1)
	v2 := e.kms.Rotate(keyA)
	e.verify(c1, v2)
	// c2: a job for v2 half way through its pass.
	rec, err := e.stores[c2].AddJobs(ctx, policy.Job{Cluster: c2, Key: keyA, Version: v2, Reason: "test", NotBefore: eventTime})
	if err != nil || len(rec.Added) != 1 {
		t.Fatalf("add job: %+v %v", rec, err)
	}
	cp, err := e.stores[c2].OpenCheckpoint(ctx, rec.Added[0].ID, "inv-0", state.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Flush(ctx, state.Checkpoint{Phase: state.PhasePass, Resource: "secrets", Continue: "tok",
		Counts: reencrypt.Counts{Listed: 120, Rewritten: 100, Current: 20}, Invocations: 2}); err != nil {
		t.Fatal(err)
	}
	e.secrets = map[string]int64{c1: 20000}
	e.countErr = map[string]error{c2: errors.New("connection refused")}

	res, err := e.rotation().Handle(fcContext("req-1"), kmsEvent(t, "DisableKey", "ev-disable"))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.notifier.sent) != 1 {
		t.Fatalf("sent %d alerts", len(e.notifier.sent))
	}
	n := e.notifier.sent[0]
	if len(n.DependentObjects) != 2 {
		t.Fatalf("dependent objects = %+v", n.DependentObjects)
	}
	d1, d2 := n.DependentObjects[0], n.DependentObjects[1]
	if d1.Cluster != c1 || d1.Objects != 20000 || d1.OldVersions != 0 || d1.Primary != v2 || d1.Verified != v2 || d1.VerifiedAt.IsZero() {
		t.Fatalf("c1 = %+v", d1)
	}
	if d2.Cluster != c2 || d2.Objects != -1 || d2.OldVersions != -1 || d2.Verified != v1 || !strings.Contains(d2.Source, "connection refused") ||
		!strings.Contains(d2.Source, "not verified yet") || !strings.Contains(d2.Job, "phase pass: 120 objects done so far (100 rewritten") {
		t.Fatalf("c2 = %+v", d2)
	}
	for _, want := range []string{"c1: 20000 Secrets depend on this key, 0 under older versions", "c2: an unknown number of Secrets depend on this key"} {
		if !strings.Contains(n.Impact, want) {
			t.Errorf("impact lacks %q: %s", want, n.Impact)
		}
	}
	if got := res.Decisions[0].Notice; got == nil || len(got.DependentObjects) != 2 {
		t.Fatalf("the result's notice lacks the counts: %+v", got)
	}
}

// TestCountSecretsAsksForOneItem: the production counter makes one LIST with limit 1 and adds
// remainingItemCount.
func TestCountSecretsAsksForOneItem(t *testing.T) {
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.URL.Path != "/api/v1/secrets" || r.URL.Query().Get("limit") != "1" {
			t.Errorf("request %s", r.URL)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{"continue":"x","remainingItemCount":19999},"items":[{"metadata":{"name":"a","namespace":"n"}}]}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := CountSecrets(ctx, Cluster{ID: "c", Rest: &rest.Config{Host: srv.URL}})
	if err != nil || n != 20000 || calls != 1 {
		t.Fatalf("count %d err %v calls %d, want 20000 in one call", n, err, calls)
	}
}
