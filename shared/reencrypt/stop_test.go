package reencrypt

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

const vapMessage = `secrets "s-0004" is forbidden: ValidatingAdmissionPolicy 'no-touch' with binding 'no-touch' denied request: frozen Secret`

// denyOne answers patches of one object with a denial and lets the rest through.
func denyOne(f *fakeAPI, key string, code int, reason metav1.StatusReason, msg string) {
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method == http.MethodPatch && k == key {
			status(w, code, reason, msg)
			return true
		}
		return false
	}
}

func TestAdmissionDenialFailsOnlyThatObject(t *testing.T) {
	webhook := `admission webhook "freeze.example.com" denied the request: frozen`
	for name, tc := range map[string]struct {
		code   int
		reason metav1.StatusReason
		msg    string
	}{
		"policy 403":  {403, metav1.StatusReasonForbidden, vapMessage},
		"policy 422":  {422, metav1.StatusReasonInvalid, vapMessage},
		"webhook 403": {403, metav1.StatusReasonForbidden, webhook},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeAPI(t, 60, "a")
			denyOne(f, "a/s-0004", tc.code, tc.reason, tc.msg)
			s, err := newEngine(t, f, nil).Run(context.Background())
			if err != nil {
				t.Fatalf("run stopped: %v; an admission denial must fail one object, not the run", err)
			}
			if s.Total.Failed != 1 || s.Total.Rewritten != 59 || !s.Complete || s.OK() {
				t.Fatalf("summary %+v complete=%v, want 1 failed, 59 rewritten, complete, not OK", s.Total, s.Complete)
			}
			if len(s.Failures) != 1 || s.Failures[0].Name != "s-0004" || !strings.Contains(s.Failures[0].Reason, tc.msg) {
				t.Fatalf("failures = %+v, want s-0004 with the server's message", s.Failures)
			}
		})
	}
}

func TestAccessCheckTellsAdmissionFromRBAC(t *testing.T) {
	// The message alone is ambiguous here; the access check decides, once per namespace.
	f := newFakeAPI(t, 40, "a", "b")
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method == http.MethodPatch && (strings.HasSuffix(k, "0") || strings.HasSuffix(k, "1")) { // in a and b
			status(w, 403, metav1.StatusReasonForbidden, "forbidden")
			return true
		}
		return false
	}
	var mu sync.Mutex
	asked := map[string]int{}
	check := func(allowedIn string) AccessCheck {
		return func(_ context.Context, verb string, gvr schema.GroupVersionResource, ns string) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			asked[verb+" "+gvr.Resource+" "+ns]++
			return ns == allowedIn || allowedIn == "*", nil
		}
	}
	s, err := newEngine(t, f, func(o *Options) { o.AccessCheck = check("*") }).Run(context.Background())
	if err != nil || s.Total.Failed != 8 || s.Total.Rewritten != 32 || !s.Complete {
		t.Fatalf("allowed by RBAC: err=%v summary %+v; want 8 failed objects, 32 rewritten, run complete", err, s.Total)
	}
	if asked["patch secrets a"] != 1 || asked["patch secrets b"] != 1 || len(asked) != 2 {
		t.Fatalf("access checks = %v, want one per namespace", asked)
	}

	f = newFakeAPI(t, 40, "a", "b")
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method == http.MethodPatch && strings.HasPrefix(k, "b/") {
			status(w, 403, metav1.StatusReasonForbidden, vapMessage) // looks like admission, but RBAC denies
			return true
		}
		return false
	}
	_, err = newEngine(t, f, func(o *Options) { o.AccessCheck = check("a") }).Run(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) || pe.Verb != "patch" || pe.Namespace != "b" {
		t.Fatalf("err = %v, want a PermissionError for patch in b", err)
	}

	// A failing check falls back to the message.
	f = newFakeAPI(t, 10, "a")
	denyOne(f, "a/s-0004", 403, metav1.StatusReasonForbidden, vapMessage)
	s, err = newEngine(t, f, func(o *Options) {
		o.AccessCheck = func(context.Context, string, schema.GroupVersionResource, string) (bool, error) {
			return false, errors.New("authz down")
		}
	}).Run(context.Background())
	if err != nil || s.Total.Failed != 1 || s.Total.Rewritten != 9 {
		t.Fatalf("check failed: err=%v summary %+v, want the message to decide", err, s.Total)
	}
}

func TestUnauthorizedStopsTheRun(t *testing.T) {
	f := newFakeAPI(t, 20, "a")
	denyOne(f, "a/s-0004", 401, metav1.StatusReasonUnauthorized, vapMessage)
	_, err := newEngine(t, f, nil).Run(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a PermissionError", err)
	}
}

func TestCancelledRunCountsNotAttempted(t *testing.T) {
	f := newFakeAPI(t, 300, "a", "b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var done atomic.Int64
	e := newEngine(t, f, func(o *Options) {
		o.OnObject = func(string, Outcome) {
			if done.Add(1) == 20 {
				cancel()
			}
		}
	})
	s, err := e.Run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if s.Complete || s.OK() || s.Total.Failed != 0 || s.Total.NotAttempted == 0 {
		t.Fatalf("summary %+v complete=%v; want incomplete, none failed, some not attempted", s.Total, s.Complete)
	}
	if s.Total.Listed != s.Total.Done()+s.Total.NotAttempted {
		t.Fatalf("listed %d != done %d + notAttempted %d", s.Total.Listed, s.Total.Done(), s.Total.NotAttempted)
	}
	if int64(f.patchCount()) < s.Total.Rewritten {
		t.Fatalf("%d rewritten but only %d patches", s.Total.Rewritten, f.patchCount())
	}
}

func TestPatchInFlightWhenCancelledIsNotAttempted(t *testing.T) {
	// The run ends while patches are with the server: those objects have no outcome.
	f := newFakeAPI(t, 8, "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var inFlight sync.WaitGroup
	inFlight.Add(4)
	var started atomic.Int64
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method != http.MethodPatch {
			return false
		}
		if started.Add(1) <= 4 {
			inFlight.Done()
		}
		_, _ = io.Copy(io.Discard, r.Body) // the server sees the client go only once the body is read
		<-r.Context().Done()               // never answer
		return true
	}
	go func() { inFlight.Wait(); cancel() }()
	s, err := newEngine(t, f, func(o *Options) { o.PageSize = 10 }).Run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if want := (Counts{Listed: 8, NotAttempted: 8}); s.Total != want || len(s.Failures) != 0 {
		t.Fatalf("summary %+v failures %+v, want %+v and no failures", s.Total, s.Failures, want)
	}
}

// expire410 answers a list with 410 Gone; token is the inconsistent continue token offered ("" none).
func expire410(w http.ResponseWriter, token string) {
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 410,
		Reason: metav1.StatusReasonExpired, Message: "continue too old", ListMeta: metav1.ListMeta{Continue: token}}
	writeJSON(w, 410, st)
}

func TestContinueTokenExpiringOnEveryPage(t *testing.T) {
	// 100 objects in pages of 7: 14 continue tokens, each expires once; the server offers a
	// token to continue without a snapshot. More expiries than the cap, but never two in a row.
	f := newFakeAPI(t, 100, "a", "b")
	var mu sync.Mutex
	seen := map[string]bool{}
	expired := 0
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		c := r.URL.Query().Get("continue")
		if r.Method != http.MethodGet || key != "/" || c == "" || strings.HasPrefix(c, "again:") {
			if strings.HasPrefix(c, "again:") {
				q := r.URL.Query()
				q.Set("continue", strings.TrimPrefix(c, "again:"))
				r.URL.RawQuery = q.Encode()
			}
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[c] {
			return false
		}
		seen[c] = true
		expired++
		expire410(w, "again:"+c)
		return true
	}
	s := runOK(t, newEngine(t, f, nil))
	if expired <= maxListRestarts || s.Total != (Counts{Listed: 100, Rewritten: 100}) || !s.Complete {
		t.Fatalf("expired=%d summary %+v complete=%v; want more than %d expiries and exact counts", expired, s.Total, s.Complete, maxListRestarts)
	}
}

func TestRestartFromTopIsNotDoubleCounted(t *testing.T) {
	// Every continue token expires the first time it is used and the server offers no token to
	// continue with: rekey lists again from the top and must skip what it already handed on.
	f := newFakeAPI(t, 60, "a", "b", "c")
	var mu sync.Mutex
	seen := map[string]bool{}
	expired := 0
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		c := r.URL.Query().Get("continue")
		if r.Method != http.MethodGet || key != "/" || c == "" {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[c] {
			return false
		}
		seen[c] = true
		expired++
		expire410(w, "")
		return true
	}
	s := runOK(t, newEngine(t, f, nil))
	if expired <= maxListRestarts || s.Total != (Counts{Listed: 60, Rewritten: 60}) || !s.Complete {
		t.Fatalf("expired=%d summary %+v; want more than %d expiries and 60 listed and rewritten once each", expired, s.Total, maxListRestarts)
	}
	if n := f.patchCount(); n != 60 {
		t.Fatalf("%d patches for 60 objects", n)
	}
}

func TestListRestartsWithoutProgressAreBounded(t *testing.T) {
	f := newFakeAPI(t, 30, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodGet && key == "/" && r.URL.Query().Get("continue") != "" {
			expire410(w, "")
			return true
		}
		return false
	}
	s, err := newEngine(t, f, nil).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "list secrets") || s.Complete {
		t.Fatalf("err = %v complete=%v; want the list to give up", err, s.Complete)
	}
	if s.Total != (Counts{Listed: 7, Rewritten: 7}) {
		t.Fatalf("summary %+v; the first page once, nothing twice", s.Total)
	}
}

// applyThenDrop applies the first patch of key, then drops the connection instead of answering.
func applyThenDrop(f *fakeAPI, key string) *atomic.Bool {
	var dropped atomic.Bool
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method != http.MethodPatch || k != key || !dropped.CompareAndSwap(false, true) {
			return false
		}
		f.ServeHTTP(httptest.NewRecorder(), r) // applied...
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			f.t.Errorf("hijack: %v", err)
			return true
		}
		_ = conn.Close() // ...but the answer is lost
		return true
	}
	return &dropped
}

func TestLostResponseAfterApplyCountsRewritten(t *testing.T) {
	for _, st := range []Strategy{Rewrite, Annotate} {
		t.Run(string(st), func(t *testing.T) {
			f := newFakeAPI(t, 10, "a")
			dropped := applyThenDrop(f, "a/s-0003")
			s := runOK(t, newEngine(t, f, func(o *Options) { o.Strategy = st }))
			if !dropped.Load() || s.Total != (Counts{Listed: 10, Rewritten: 10}) {
				t.Fatalf("dropped=%v summary %+v; want all 10 rewritten (the lost answer was applied)", dropped.Load(), s.Total)
			}
			if st == Rewrite && (s.Conflicts != 1 || f.callCount("GET a/s-0003") != 1) {
				t.Fatalf("conflicts=%d re-reads=%d, want the retry to conflict once and re-read", s.Conflicts, f.callCount("GET a/s-0003"))
			}
		})
	}
}

func TestDefiniteConflictThenNoOpIsCurrent(t *testing.T) {
	// Nothing of rekey's was applied (a 429 is refused before it is handled), and a concurrent
	// writer rewrote the object: that stays Current.
	f := newFakeAPI(t, 4, "a")
	var step atomic.Int64
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method != http.MethodPatch || k != "a/s-0001" {
			return false
		}
		switch step.Add(1) {
		case 1:
			f.mu.Lock()
			f.rv++
			f.objs[k].rv, f.stale[k] = f.rv, false
			f.mu.Unlock()
			status(w, 429, metav1.StatusReasonTooManyRequests, "slow down")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, nil))
	if s.Total != (Counts{Listed: 4, Rewritten: 3, Current: 1}) || s.Conflicts != 1 {
		t.Fatalf("summary %+v conflicts=%d", s.Total, s.Conflicts)
	}
}

func TestSelfSubjectAccessReview(t *testing.T) {
	cs := fake.NewClientset()
	var asked authorizationv1.ResourceAttributes
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		review := a.(clienttesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		asked = *review.Spec.ResourceAttributes
		review.Status.Allowed = asked.Namespace == "a"
		return true, review, nil
	})
	check := SelfSubjectAccessReview(cs.AuthorizationV1())
	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	ok, err := check(context.Background(), "patch", gvr, "a")
	if err != nil || !ok || asked.Verb != "patch" || asked.Group != "apps" || asked.Resource != "deployments" || asked.Namespace != "a" {
		t.Fatalf("allowed=%v err=%v asked %+v", ok, err, asked)
	}
	if ok, err := check(context.Background(), "patch", gvr, "b"); err != nil || ok {
		t.Fatalf("namespace b: allowed=%v err=%v, want denied", ok, err)
	}
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("authz down")
	})
	if _, err := check(context.Background(), "patch", gvr, "a"); err == nil || !strings.Contains(err.Error(), "access review") {
		t.Fatalf("err = %v, want a wrapped error", err)
	}
}

func TestRunEndingAfterTheLastObjectIsComplete(t *testing.T) {
	// The caller's context ends once every object has its outcome: nothing was cut short.
	f := newFakeAPI(t, 5, "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int64
	s, err := newEngine(t, f, func(o *Options) {
		o.PageSize = 10
		o.OnObject = func(string, Outcome) {
			if n.Add(1) == 5 {
				cancel()
			}
		}
	}).Run(ctx)
	if err != nil || !s.Complete || s.Total != (Counts{Listed: 5, Rewritten: 5}) {
		t.Fatalf("err=%v complete=%v %+v, want a complete run", err, s.Complete, s.Total)
	}
}
