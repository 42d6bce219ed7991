package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

func rotateDecision(id string, jobs ...policy.Job) policy.Decision {
	return policy.Decision{Kind: policy.Rotate, Reason: "test", Event: events.DedupKey{Source: "acs.kms", ID: id}, Jobs: jobs}
}

func job(cluster, key, version string) policy.Job {
	return policy.Job{Cluster: cluster, Key: key, Version: version, Reason: "CreateKeyVersion", NotBefore: t0.Add(2 * time.Minute)}
}

func TestRecordIsIdempotentAndSnapshotFeedsPolicy(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	s, _ := newStore(t, cs, "c1")

	dec := rotateDecision("ev-1", job("c1", "key-a", "v2"), job("c1", "key-b", ""))
	r, err := s.Record(ctx, dec)
	if err != nil {
		t.Fatal(err)
	}
	if !r.First || len(r.Added) != 2 || len(r.Existing) != 0 {
		t.Fatalf("first Record = %+v, want First and 2 added", r)
	}
	if r.Added[0].ID != JobID("c1", "key-a", "v2") || r.Added[0].Event != dec.Event || !r.Added[0].Created.Equal(t0) {
		t.Fatalf("added record %+v: want its ID, event and creation time", r.Added[0])
	}

	// The same event again, and another event asking for the same job.
	r, err = s.Record(ctx, dec)
	if err != nil {
		t.Fatal(err)
	}
	if r.First || len(r.Added) != 0 || len(r.Existing) != 2 {
		t.Fatalf("second Record = %+v, want not First, nothing added, 2 existing", r)
	}
	r, err = s.Record(ctx, rotateDecision("ev-2", job("c1", "key-a", "v2")))
	if err != nil {
		t.Fatal(err)
	}
	if !r.First || len(r.Added) != 0 || len(r.Existing) != 1 {
		t.Fatalf("other event, same job: %+v, want First (new event) and the job existing", r)
	}

	st, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 2 || !st.Handled[dec.Event] || !st.Handled[events.DedupKey{Source: "acs.kms", ID: "ev-2"}] || len(st.Handled) != 2 {
		t.Fatalf("snapshot %+v: want 2 pending jobs and both events handled", st)
	}

	// An ignored decision writes nothing.
	before := countActions(cs, "update", "configmaps")
	if r, err := s.Record(ctx, policy.Decision{Kind: policy.Ignore, Event: events.DedupKey{Source: "acs.kms", ID: "ev-3"}}); err != nil || r.First {
		t.Fatalf("ignore: %+v, %v", r, err)
	}
	if got := countActions(cs, "update", "configmaps"); got != before {
		t.Fatalf("an ignored decision wrote the state (%d updates, want %d)", got, before)
	}
}

func TestRecordConcurrentSameEventIsOneJob(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	dec := rotateDecision("ev-dup", job("c1", "key-a", "v2"))
	var wg sync.WaitGroup
	results := make([]Recorded, 5)
	errs := make([]error, 5)
	for i := range 5 {
		s, _ := newStore(t, cs, "c1") // one Store per delivery, as in separate invocations
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.Record(ctx, dec)
		}()
	}
	wg.Wait()
	first, added := 0, 0
	for i := range 5 {
		if errs[i] != nil {
			t.Fatalf("Record %d: %v", i, errs[i])
		}
		if results[i].First {
			first++
		}
		added += len(results[i].Added)
	}
	s, _ := newStore(t, cs, "c1")
	jobs, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first != 1 || added != 1 || len(jobs) != 1 {
		t.Fatalf("5 concurrent Records: %d First, %d added, %d pending; want 1, 1, 1", first, added, len(jobs))
	}
}

func TestCompleteVerifiesAndClearsJobs(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	s, clk := newStore(t, cs, "c1")
	if _, err := s.Record(ctx, rotateDecision("ev-1", job("c1", "key-a", "v2"), job("c1", "key-a", ""), job("c1", "key-a", "v9"), job("c1", "key-b", "v2"))); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var done JobRecord
	for _, j := range jobs {
		if j.Key == "key-a" && j.Version == "v2" {
			done = j
		}
	}
	cp, err := s.OpenCheckpoint(ctx, done.ID, "run-1", CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Flush(ctx, Checkpoint{Phase: PhasePass, Resource: "secrets", Continue: "tok"}); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Hour)
	removed, err := s.Complete(ctx, done, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Fatalf("removed %+v, want the v2 job and the primary-version job of key-a", removed)
	}
	st, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Verified[policy.Target{Cluster: "c1", Key: "key-a"}]; got != "v2" {
		t.Fatalf("verified key-a = %q, want v2", got)
	}
	if len(st.Pending) != 2 {
		t.Fatalf("pending %+v, want key-a v9 and key-b v2 left", st.Pending)
	}
	if _, found, err := s.LoadCheckpoint(ctx, done.ID); err != nil || found {
		t.Fatalf("checkpoint of the completed job: found=%v err=%v, want deleted", found, err)
	}
	vs, err := s.VerifiedVersions(ctx)
	if err != nil || len(vs) != 1 || !vs[0].At.Equal(t0.Add(time.Hour)) {
		t.Fatalf("verified versions %+v (%v): want one, stamped by the clock", vs, err)
	}

	// The verified version is not recorded again.
	r, err := s.Record(ctx, rotateDecision("ev-late", job("c1", "key-a", "v2")))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Added) != 0 || len(r.AlreadyVerified) != 1 {
		t.Fatalf("Record of a verified version: %+v, want it reported as already verified", r)
	}
	if _, err := s.Complete(ctx, done, ""); err == nil {
		t.Fatal("Complete with an empty version must fail")
	}
}

func TestRecordRejectsJobsOfAnotherCluster(t *testing.T) {
	s, _ := newStore(t, rvClient(t), "c1")
	_, err := s.Record(context.Background(), rotateDecision("ev", job("c2", "key-a", "v2")))
	if err == nil || !strings.Contains(err.Error(), `"c2"`) {
		t.Fatalf("err = %v, want a refusal naming cluster c2", err)
	}
}

func TestHandledEventsAreBounded(t *testing.T) {
	ctx := context.Background()
	s, clk := newStore(t, rvClient(t), "c1", WithHandledBounds(3, time.Hour))
	note := func(id string) policy.Decision {
		return policy.Decision{Kind: policy.Alert, Event: events.DedupKey{Source: "acs.kms", ID: id}}
	}
	for i := range 5 {
		if _, err := s.Record(ctx, note(fmt.Sprint("e", i))); err != nil {
			t.Fatal(err)
		}
		clk.Step(time.Minute)
	}
	st, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Handled) != 3 || !st.Handled[note("e4").Event] || st.Handled[note("e1").Event] {
		t.Fatalf("handled %v: want the newest 3 (e2..e4)", st.Handled)
	}
	clk.Step(time.Hour - 2*time.Minute) // e2 is now older than the TTL; e3, e4 are not
	st, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Handled) != 2 || st.Handled[note("e2").Event] {
		t.Fatalf("handled %v: want e2 expired by TTL", st.Handled)
	}
}

func TestConflictsAndTransientErrorsAreRetried(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	s, _ := newStore(t, cs, "c1")
	if _, err := s.Record(ctx, rotateDecision("ev-0")); err != nil {
		t.Fatal(err)
	}
	// Three updates lose a race with another writer (which adds its own job first: a 409 for ours),
	// then one meets a 503.
	raced, failed := 0, 0
	cs.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if raced < 3 {
			raced++
			obj, err := cs.Tracker().Get(a.GetResource(), a.GetNamespace(), s.StateName())
			if err != nil {
				return true, nil, err
			}
			cm := obj.(*corev1.ConfigMap).DeepCopy()
			d, err := decodeState(cm)
			if err != nil {
				return true, nil, err
			}
			d.Jobs = append(d.Jobs, JobRecord{Job: job("c1", fmt.Sprint("other-", raced), "v1"), ID: JobID("c1", fmt.Sprint("other-", raced), "v1")})
			if cm.Data, err = d.encode(); err != nil {
				return true, nil, err
			}
			if err := cs.Tracker().Update(a.GetResource(), cm, a.GetNamespace()); err != nil {
				return true, nil, err
			}
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), s.StateName(), errStale)
		}
		if failed < 1 {
			failed++
			return true, nil, apierrors.NewServiceUnavailable("etcd leader changed")
		}
		return false, nil, nil
	})
	r, err := s.Record(ctx, rotateDecision("ev-1", job("c1", "key-a", "v2")))
	if err != nil {
		t.Fatalf("Record through 3 conflicts and a 503: %v", err)
	}
	if !r.First || len(r.Added) != 1 || raced != 3 || failed != 1 {
		t.Fatalf("Record = %+v after %d races and %d 503s, want the job added after 3 and 1", r, raced, failed)
	}
	jobs, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 4 {
		t.Fatalf("pending %+v: want our job and the 3 the other writer added (no lost update)", jobs)
	}
}

func TestDeniedNamesTheMissingRBAC(t *testing.T) {
	cs := rvClient(t)
	cs.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "rekey-state-c1", errors.New("RBAC: access denied"))
	})
	s, _ := newStore(t, cs, "c1")
	_, err := s.Snapshot(context.Background())
	for _, want := range []string{`"get"`, "configmaps", Namespace, RBACFile} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want it to name %s", err, want)
		}
	}
	if got := countActions(cs, "get", "configmaps"); got != 1 {
		t.Fatalf("%d reads, want a denial not retried", got)
	}
}

// missingNamespace makes creates in namespaces that do not exist fail as the API server does.
func missingNamespace(t *testing.T, cs interface {
	PrependReactor(verb, resource string, r k8stesting.ReactionFunc)
	Tracker() k8stesting.ObjectTracker
}) {
	t.Helper()
	for _, res := range []string{"configmaps", "leases"} {
		cs.PrependReactor("create", res, func(a k8stesting.Action) (bool, runtime.Object, error) {
			_, err := cs.Tracker().Get(corev1.SchemeGroupVersion.WithResource("namespaces"), "", a.GetNamespace())
			if apierrors.IsNotFound(err) {
				return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, a.GetNamespace())
			}
			return false, nil, nil
		})
	}
}

func TestNamespaceCreatedWhenMissingOrNamedWhenForbidden(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	missingNamespace(t, cs)
	s, _ := newStore(t, cs, "c1")
	if _, err := s.Record(ctx, rotateDecision("ev", job("c1", "k", "v2"))); err != nil {
		t.Fatalf("Record with the namespace missing: %v", err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, Namespace, metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace not created: %v", err)
	}

	cs = rvClient(t)
	missingNamespace(t, cs)
	cs.PrependReactor("create", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, Namespace, errors.New("RBAC"))
	})
	s, _ = newStore(t, cs, "c1")
	_, _, err := s.TryAcquire(ctx, "run-1", time.Minute)
	for _, want := range []string{"namespace " + Namespace + " does not exist", `"create" on namespaces`, RBACFile} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want it to contain %q", err, want)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tt := range []struct{ cluster, want string }{
		{"c8a9f1b2e3d4c4a5b6c7d8e9f0a1b2c3d", "c8a9f1b2e3d4c4a5b6c7d8e9f0a1b2c3d"},
		{"Prod_Cluster", "prod-cluster-"},
		{"---", "x"},
	} {
		got := nameOf(tt.cluster)
		if !strings.HasPrefix(got, tt.want) || !dnsLabel.MatchString(got) || len(got) > 40 {
			t.Errorf("nameOf(%q) = %q, want a DNS label starting %q", tt.cluster, got, tt.want)
		}
	}
	if nameOf("A") == nameOf("a-") || nameOf("a_b") == nameOf("a.b") {
		t.Error("distinct cluster IDs must get distinct names")
	}
	if id := JobID("c", "k", "v"); id != JobID("c", "k", "v") || id == JobID("c", "k", "") || !dnsLabel.MatchString(id) {
		t.Errorf("JobID %q: want stable, version-sensitive, a DNS label", id)
	}
}

// TestDeferMovesTheJobAndSaysWhenTheOutcomeIsNew: a failed run defers its job (NotBefore moves
// later, never earlier), counts the attempt, and says whether its kind of outcome is new, so that
// one notice goes out per job and kind.
func TestDeferMovesTheJobAndSaysWhenTheOutcomeIsNew(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, rvClient(t), "c1")
	r, err := s.AddJobs(ctx, job("c1", "key-a", "v2"))
	if err != nil || len(r.Added) != 1 {
		t.Fatalf("add: %+v %v", r, err)
	}
	id := r.Added[0].ID
	steps := []struct {
		kind  string
		at    time.Time
		isNew bool
		want  time.Time
	}{
		{"suspicious", t0.Add(time.Hour), true, t0.Add(time.Hour)},
		{"suspicious", t0.Add(30 * time.Minute), false, t0.Add(time.Hour)}, // never earlier
		{"failed", t0.Add(3 * time.Hour), true, t0.Add(3 * time.Hour)},
	}
	for i, st := range steps {
		d, err := s.Defer(ctx, id, st.at, st.kind, "because")
		if err != nil {
			t.Fatal(err)
		}
		if d.NewOutcome != st.isNew || d.Job.Attempts != i+1 || !d.Job.NotBefore.Equal(st.want) || d.Job.LastOutcome != st.kind+": because" {
			t.Fatalf("step %d: %+v, want new=%v, %d attempts, notBefore %s", i, d, st.isNew, i+1, st.want)
		}
	}
	pending, err := s.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].Attempts != 3 {
		t.Fatalf("pending %+v %v", pending, err)
	}
	if d, err := s.Defer(ctx, "no-such-job", t0, "failed", "x"); err != nil || d.Job.ID != "" {
		t.Fatalf("unknown job: %+v %v", d, err)
	}
}
