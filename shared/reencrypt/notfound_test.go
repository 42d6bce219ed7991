package reencrypt

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// notFoundHook answers 404 to the first `times` patches of key while the object stays stored.
func notFoundHook(f *fakeAPI, key string, times int32) {
	var n atomic.Int32
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method == http.MethodPatch && k == key && n.Add(1) <= times {
			status(w, 404, metav1.StatusReasonNotFound, `secrets "`+k+`" not found`)
			return true
		}
		return false
	}
}

func TestPatchNotFoundForAnExistingObjectIsNotDeleted(t *testing.T) {
	f := newFakeAPI(t, 20, "a")
	notFoundHook(f, "a/s-0004", 1000)
	s := runOK(t, newEngine(t, f, nil))
	if s.Total.Deleted != 0 || s.Total.Failed != 1 || s.Total.Rewritten != 19 {
		t.Fatalf("totals %+v: a 404 for an object a fresh GET finds must fail it, not count it deleted", s.Total)
	}
	if len(s.Failures) != 1 || s.Failures[0].Name != "s-0004" || !strings.Contains(s.Failures[0].Reason, "fresh GET still finds the object") ||
		!strings.Contains(s.Failures[0].Reason, "not counted as deleted") {
		t.Fatalf("failures = %+v", s.Failures)
	}
	if got := f.callCount("PATCH a/s-0004"); got != 2 {
		t.Fatalf("patches of s-0004 = %d, want 2 (one retry)", got)
	}
	if s.OK() {
		t.Fatal("summary must not be OK")
	}
}

func TestPatchNotFoundOnceIsRetried(t *testing.T) {
	f := newFakeAPI(t, 20, "a")
	notFoundHook(f, "a/s-0004", 1)
	s := runOK(t, newEngine(t, f, nil))
	if s.Total.Deleted != 0 || s.Total.Failed != 0 || s.Total.Rewritten != 20 {
		t.Fatalf("totals %+v: a spurious 404 must be retried and the object rewritten", s.Total)
	}
	if f.stale["a/s-0004"] {
		t.Fatal("s-0004 is still stale")
	}
}

func TestPatchNotFoundForADeletedObjectIsDeleted(t *testing.T) {
	f := newFakeAPI(t, 20, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, k string) bool {
		if r.Method == http.MethodPatch && k == "a/s-0004" {
			f.mu.Lock()
			delete(f.objs, k) // deleted after it was listed
			f.mu.Unlock()
		}
		return false
	}
	s := runOK(t, newEngine(t, f, nil))
	if s.Total.Deleted != 1 || s.Total.Failed != 0 || s.Total.Rewritten != 19 {
		t.Fatalf("totals %+v, want 1 deleted", s.Total)
	}
	if got := f.callCount("GET a/s-0004"); got != 1 {
		t.Fatalf("GETs of s-0004 = %d, want 1 (the fresh read that confirms the deletion)", got)
	}
}
