package reencrypt

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/retry"
)

var secrets = Target{Name: "secrets", GVR: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}}

type instantTimer struct{ c chan time.Time }

func (t *instantTimer) C() <-chan time.Time { return t.c }
func (t *instantTimer) Start(time.Duration) { t.c <- time.Time{} }
func (t *instantTimer) Stop()               {}
func fastRetry() retry.Policy {
	return retry.Policy{MaxAttempts: 4, Timer: &instantTimer{c: make(chan time.Time, 1)}}
}

func newEngine(t *testing.T, f *fakeAPI, mutate func(*Options)) *Engine {
	t.Helper()
	opts := Options{Targets: []Target{secrets}, Strategy: Rewrite, Concurrency: 4, PageSize: 7, Retry: fastRetry()}
	if mutate != nil {
		mutate(&opts)
	}
	e, err := New(f.client(t), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func runOK(t *testing.T, e *Engine) Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return s
}

func TestRewriteCountsStaleAndCurrent(t *testing.T) {
	f := newFakeAPI(t, 50, "a", "b", "c")
	n := 0
	for k := range f.stale {
		if n%2 == 0 {
			f.stale[k] = false
		}
		n++
	}
	e := newEngine(t, f, nil)
	s := runOK(t, e)
	want := Counts{Listed: 50, Rewritten: 25, Current: 25}
	if s.Total != want || len(s.Resources) != 1 || s.Resources[0].Counts != want {
		t.Fatalf("first run totals = %+v, want %+v", s.Total, want)
	}
	if !s.OK() {
		t.Fatal("summary should be OK")
	}
	s = runOK(t, e)
	if want := (Counts{Listed: 50, Current: 50}); s.Total != want {
		t.Fatalf("second run totals = %+v, want %+v", s.Total, want)
	}
}

func TestAnnotateWritesEveryObjectOnce(t *testing.T) {
	f := newFakeAPI(t, 20, "a")
	for k := range f.stale {
		f.stale[k] = false // KMS v1: nothing is ever stale
	}
	at := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	e := newEngine(t, f, func(o *Options) { o.Strategy = Annotate; o.Clock = clocktesting.NewFakePassiveClock(at) })
	if s := runOK(t, e); s.Total.Rewritten != 20 {
		t.Fatalf("rewritten = %d, want 20", s.Total.Rewritten)
	}
	for k, o := range f.objs {
		if got := o.ann[RotationAnnotation]; got != "2026-11-27T03:00:00Z" {
			t.Fatalf("%s annotation = %q", k, got)
		}
	}
	if s := runOK(t, e); s.Total.Current != 20 {
		t.Fatalf("same timestamp again should change nothing, got %+v", s.Total)
	}
}

func TestConflictRereadsAndRetries(t *testing.T) {
	f := newFakeAPI(t, 10, "a")
	var once atomic.Bool
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch && key == "a/s-0003" && once.CompareAndSwap(false, true) {
			// A concurrent writer got there first: bump the object and report the conflict.
			f.mu.Lock()
			f.rv++
			f.objs[key].rv = f.rv
			f.stale[key] = false
			f.mu.Unlock()
			status(w, 409, metav1.StatusReasonConflict, "the object has been modified")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, nil))
	if s.Conflicts != 1 || s.Total.Rewritten != 9 || s.Total.Current != 1 || s.Total.Failed != 0 {
		t.Fatalf("summary = %+v conflicts=%d, want 9 rewritten, 1 current (written by the other writer), 1 conflict", s.Total, s.Conflicts)
	}
	if f.callCount("GET a/s-0003") != 1 {
		t.Fatalf("expected one re-read, got %d", f.callCount("GET a/s-0003"))
	}
}

func TestConflictRetriesAreBounded(t *testing.T) {
	f := newFakeAPI(t, 3, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch && key == "a/s-0001" {
			status(w, 409, metav1.StatusReasonConflict, "the object has been modified")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, func(o *Options) { o.ConflictRetries = 2 }))
	if s.Total.Failed != 1 || s.Total.Rewritten != 2 || s.OK() {
		t.Fatalf("summary = %+v, want 1 failed and 2 rewritten", s.Total)
	}
	if len(s.Failures) != 1 || s.Failures[0].Name != "s-0001" || !strings.Contains(s.Failures[0].Reason, "conflicting") {
		t.Fatalf("failures = %+v", s.Failures)
	}
	if got := f.callCount("PATCH a/s-0001"); got != 3 {
		t.Fatalf("patch attempts = %d, want 3 (1 + 2 re-reads)", got)
	}
}

func TestDeletedObjectsAreCounted(t *testing.T) {
	f := newFakeAPI(t, 6, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch && (key == "a/s-0002" || key == "a/s-0004") {
			// Deleted after it was listed: the fresh GET after the 404 agrees (notfound.go).
			f.mu.Lock()
			delete(f.objs, key)
			f.mu.Unlock()
			status(w, 404, metav1.StatusReasonNotFound, "gone")
			return true
		}
		return false
	}
	if s := runOK(t, newEngine(t, f, nil)); s.Total.Deleted != 2 || s.Total.Rewritten != 4 {
		t.Fatalf("summary = %+v, want 2 deleted, 4 rewritten", s.Total)
	}
}

func TestTransientErrorsAreRetried(t *testing.T) {
	f := newFakeAPI(t, 12, "a")
	var mu sync.Mutex
	failed := map[string]int{}
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		// Every request (list pages included) fails twice with 503, then succeeds: within the
		// policy's 4 attempts, so every object must end rewritten.
		id := r.Method + " " + key + " " + r.URL.Query().Get("continue")
		mu.Lock()
		defer mu.Unlock()
		if failed[id] < 2 {
			failed[id]++
			status(w, 503, metav1.StatusReasonServiceUnavailable, "storm")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, nil))
	// 12 patches and 2 list pages, each retried twice.
	if s.Total.Rewritten != 12 || s.Total.Failed != 0 || s.Retries != 2*(12+2) {
		t.Fatalf("summary = %+v retries=%d, want 12 rewritten and 28 retries", s.Total, s.Retries)
	}
}

func TestPersistentServerErrorsFailTheObjectNotTheRun(t *testing.T) {
	f := newFakeAPI(t, 4, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch && key == "a/s-0000" {
			status(w, 500, metav1.StatusReasonInternalError, "etcd down")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, nil))
	if s.Total.Failed != 1 || s.Total.Rewritten != 3 || f.callCount("PATCH a/s-0000") != 4 {
		t.Fatalf("summary = %+v attempts=%d, want 1 failed after 4 attempts", s.Total, f.callCount("PATCH a/s-0000"))
	}
	if !strings.Contains(s.Failures[0].Reason, "gave up after 4 attempts") {
		t.Fatalf("reason = %q", s.Failures[0].Reason)
	}
}

func TestForbiddenStopsTheRun(t *testing.T) {
	f := newFakeAPI(t, 200, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch {
			status(w, 403, metav1.StatusReasonForbidden, `secrets "x" is forbidden: User "u" cannot patch resource "secrets"`)
			return true
		}
		return false
	}
	e := newEngine(t, f, nil)
	s, err := e.Run(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) || pe.Verb != "patch" || pe.Resource != "secrets" {
		t.Fatalf("err = %v, want a PermissionError for patch secrets", err)
	}
	if s.Complete || s.OK() || s.StopReason == "" || s.Total.Listed != s.Total.Done()+s.Total.NotAttempted || s.Total.Rewritten != 0 {
		t.Fatalf("summary after a permission stop: complete=%v ok=%v reason=%q %+v; want incomplete, listed == done + notAttempted",
			s.Complete, s.OK(), s.StopReason, s.Total)
	}
	if !strings.Contains(err.Error(), `needs "patch" on "secrets"`) {
		t.Fatalf("message does not name the permission: %v", err)
	}
	if patches := f.patchCount(); patches >= 200 {
		t.Fatalf("run went on after the first 403: %d patches", f.patchCount())
	}
}

func TestForbiddenListNamesListVerb(t *testing.T) {
	f := newFakeAPI(t, 3, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		status(w, 403, metav1.StatusReasonForbidden, "no list")
		return true
	}
	_, err := newEngine(t, f, nil).Run(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) || pe.Verb != "list" {
		t.Fatalf("err = %v, want a PermissionError for list", err)
	}
}

func TestNamespaceFilters(t *testing.T) {
	f := newFakeAPI(t, 30, "a", "b", "kube-system")
	s := runOK(t, newEngine(t, f, func(o *Options) { o.ExcludeNamespaces = []string{"kube-system"} }))
	if s.Total.Rewritten != 20 {
		t.Fatalf("exclude: %+v, want 20", s.Total)
	}
	for k, o := range f.objs {
		if strings.HasPrefix(k, "kube-system/") && o.rv > 30 {
			t.Fatalf("excluded object %s was patched", k)
		}
	}
	s = runOK(t, newEngine(t, f, func(o *Options) { o.Namespaces = []string{"kube-system", "a"}; o.ExcludeNamespaces = []string{"a"} }))
	if s.Total.Listed != 10 || s.Total.Rewritten != 10 {
		t.Fatalf("include kube-system only: %+v, want 10 rewritten", s.Total)
	}
}

func TestDryRunPatchesNothing(t *testing.T) {
	f := newFakeAPI(t, 15, "a")
	var estimate atomic.Int64
	var listed atomic.Int64
	s := runOK(t, newEngine(t, f, func(o *Options) {
		o.DryRun = true
		o.OnListed = func(_ string, e int64) { estimate.Add(e) }
		o.OnObject = func(_ string, oc Outcome) {
			if oc == Listed {
				listed.Add(1)
			}
		}
	}))
	if s.Total.Listed != 15 || s.Total.Done() != 0 || !s.DryRun {
		t.Fatalf("dry run summary %+v", s.Total)
	}
	if n := f.patchCount(); n != 0 {
		t.Fatalf("dry run sent %d patches", n)
	}
	if estimate.Load() != 15 || listed.Load() != 15 {
		t.Fatalf("estimate=%d listed callbacks=%d, want 15 and 15", estimate.Load(), listed.Load())
	}
	if f.callCount("LIST") != 3 {
		t.Fatalf("pages = %d, want 3 (page size 7)", f.callCount("LIST"))
	}
}

func TestExpiredContinueTokenContinues(t *testing.T) {
	f := newFakeAPI(t, 20, "a")
	var expired atomic.Bool
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if key == "/" && r.URL.Query().Get("continue") != "" && expired.CompareAndSwap(false, true) {
			st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 410,
				Reason: metav1.StatusReasonExpired, Message: "continue too old", ListMeta: metav1.ListMeta{Continue: r.URL.Query().Get("continue")}}
			writeJSON(w, 410, st)
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, nil))
	if !expired.Load() || s.Total.Listed != 20 || s.Total.Rewritten != 20 {
		t.Fatalf("expired=%v summary=%+v, want 20 listed and rewritten once each", expired.Load(), s.Total)
	}
}

func TestNewValidates(t *testing.T) {
	f := newFakeAPI(t, 1, "a")
	c := f.client(t)
	for name, o := range map[string]Options{
		"no targets":     {Strategy: Rewrite},
		"auto":           {Targets: []Target{secrets}, Strategy: Auto},
		"negative conc.": {Targets: []Target{secrets}, Strategy: Rewrite, Concurrency: -1},
	} {
		if _, err := New(c, o); err == nil {
			t.Errorf("%s: New accepted invalid options", name)
		}
	}
	if _, err := New(nil, Options{Targets: []Target{secrets}, Strategy: Rewrite}); err == nil {
		t.Error("New accepted a nil client")
	}
}

func TestStrategies(t *testing.T) {
	for in, want := range map[string]Strategy{"": Auto, "auto": Auto, "rewrite": Rewrite, "replace": Rewrite, "Annotate": Annotate} {
		got, err := ParseStrategy(in)
		if err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseStrategy("rotate"); err == nil || !strings.Contains(err.Error(), "rewrite") {
		t.Errorf("ParseStrategy(rotate) error = %v", err)
	}
	for v, want := range map[string]Strategy{"v1.37.2": Rewrite, "v1.31.1-aliyun.1": Rewrite, "v1.30.9": Annotate, "v1.28.0+k3s1": Annotate} {
		got, err := Auto.Resolve(v)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	if _, err := Auto.Resolve("garbage"); err == nil {
		t.Error("Resolve accepted a bad version")
	}
	if got, _ := Annotate.Resolve("v1.37.0"); got != Annotate {
		t.Error("an explicit strategy must not be changed by Resolve")
	}
}

func TestPatchBodies(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	b, _ := patchBody(Rewrite, "42", at)
	if string(b) != `{"metadata":{"resourceVersion":"42"}}` {
		t.Errorf("rewrite patch = %s", b)
	}
	b, _ = patchBody(Annotate, "42", at)
	if string(b) != `{"metadata":{"annotations":{"encryption-key-rotation-time":"2026-01-02T02:04:05Z"}}}` {
		t.Errorf("annotate patch = %s", b)
	}
	if _, err := patchBody(Auto, "1", at); err == nil {
		t.Error("auto must not build a patch")
	}
}

func TestSummaryArithmetic(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := Summary{StartedAt: start, Resources: []ResourceSummary{
		{Resource: "secrets", Counts: Counts{Listed: 10, Rewritten: 6, Current: 2, Deleted: 1, Failed: 1}},
		{Resource: "configmaps", Counts: Counts{Listed: 10, Rewritten: 10}},
	}}
	s.finish(start.Add(4 * time.Second))
	if want := (Counts{Listed: 20, Rewritten: 16, Current: 2, Deleted: 1, Failed: 1}); s.Total != want {
		t.Fatalf("total = %+v, want %+v", s.Total, want)
	}
	if s.DurationSeconds != 4 || s.ObjectsPerSecond != 5 || s.OK() {
		t.Fatalf("duration=%v rate=%v ok=%v", s.DurationSeconds, s.ObjectsPerSecond, s.OK())
	}
	b, err := json.Marshal(s)
	if err != nil || !strings.Contains(string(b), `"rewritten":16`) || !strings.Contains(string(b), `"notAttempted":0`) || !strings.Contains(string(b), `"complete":false`) {
		t.Fatalf("json = %s, %v", b, err)
	}
	ok := Summary{Complete: true, Total: Counts{Listed: 3, Rewritten: 3}}
	if !ok.OK() {
		t.Fatal("a complete run with no failures must be OK")
	}
	ok.Complete = false
	if ok.OK() {
		t.Fatal("an incomplete run must not be OK")
	}
	ok.Complete, ok.Total.NotAttempted = true, 1
	if ok.OK() {
		t.Fatal("a run with objects not attempted must not be OK")
	}
}
