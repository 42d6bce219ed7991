package reencrypt

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kmsDown is what kube-apiserver answers when its KMS v2 provider has no data key (KMS was
// unreachable when it started).
const kmsDown = "data from the storage is not transformable revision=0: got unexpected nil transformer"

// TestOutageStopsTheRunNamingKMS: after 30 objects the API server answers every patch with a KMS
// failure. The run stops once MaxFailuresInARow objects failed in a row, naming KMS, instead of
// retrying each of the 470 others: the patches sent are bounded by the objects in flight.
func TestOutageStopsTheRunNamingKMS(t *testing.T) {
	f := newFakeAPI(t, 500, "a", "b")
	var patches atomic.Int64
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch && patches.Add(1) > 30 {
			status(w, 500, metav1.StatusReasonInternalError, kmsDown)
			return true
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := newEngine(t, f, nil).Run(ctx)
	var oe *OutageError
	var ke *KMSError
	if !errors.As(err, &oe) || !errors.As(err, &ke) || !apierrors.IsInternalError(err) {
		t.Fatalf("err = %v, want an *OutageError with a *KMSError around the API server's 500", err)
	}
	if s.Complete || !strings.Contains(s.StopReason, "KMS") || !strings.Contains(s.StopReason, "in a row") {
		t.Fatalf("summary complete=%v stop reason %q", s.Complete, s.StopReason)
	}
	// 4 workers: at most MaxFailuresInARow+4 objects fail, each after 4 attempts, plus the attempts
	// in flight when the run stops (slack: twice that). Without the breaker: 470 objects x 4.
	if max := int64(30 + 2*(MaxFailuresInARow+4)*4); patches.Load() > max {
		t.Fatalf("%d patches for an outage, want at most %d", patches.Load(), max)
	}
	// The lister stops too: what it listed and no worker reached is not attempted; the rest was
	// never listed. (With instant retries a success recorded late can restart the count once: the
	// same slack as above.)
	if s.Total.Listed >= 500 || s.Total.NotAttempted == 0 || s.Total.Failed < MaxFailuresInARow || s.Total.Failed > 2*(MaxFailuresInARow+4) {
		t.Fatalf("totals %+v: want %d to %d failed, the rest not attempted or not listed", s.Total, MaxFailuresInARow, 2*(MaxFailuresInARow+4))
	}
}

// TestScatteredFailuresDoNotStopTheRun: objects that fail among objects that succeed are failures
// of those objects, not an outage.
func TestScatteredFailuresDoNotStopTheRun(t *testing.T) {
	f := newFakeAPI(t, 60, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch && key[len(key)-1] == '0' { // 6 of 60 objects, never 10 in a row
			status(w, 500, metav1.StatusReasonInternalError, "etcd request timed out")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, func(o *Options) { o.Concurrency = 1 }))
	if s.Total.Failed != 6 || s.Total.Rewritten != 54 || !s.Complete {
		t.Fatalf("summary %+v complete=%v", s.Total, s.Complete)
	}
}

func TestExplainKMS(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{apierrors.NewInternalError(errors.New(kmsDown)), true},
		{apierrors.NewInternalError(errors.New("failed to decrypt DEK, error: rpc error: code = Unavailable")), true},
		{apierrors.NewInternalError(errors.New("etcdserver: request timed out")), false},
		{apierrors.NewConflict(secrets.GVR.GroupResource(), "x", errors.New("KMS in the message of a 409")), false},
		{errors.New("kms: not an API status"), false},
		{nil, false},
	} {
		err := explainKMS(c.err)
		var ke *KMSError
		if got := errors.As(err, &ke); got != c.want {
			t.Errorf("explainKMS(%v) = %v, want KMS %v", c.err, err, c.want)
		}
		if c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("explainKMS(%v) lost the cause", c.err)
		}
	}
}
