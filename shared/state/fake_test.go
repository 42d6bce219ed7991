package state

import (
	"strconv"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/retry"
)

// instantTimer fires at once; it is safe for concurrent use by many retry loops.
type instantTimer struct{}

func (instantTimer) Start(time.Duration) {}
func (instantTimer) Stop()               {}
func (instantTimer) C() <-chan time.Time {
	c := make(chan time.Time, 1)
	c <- time.Time{}
	return c
}

var t0 = time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)

// rvClient is a fake clientset that, unlike the plain fake, stamps resourceVersions and enforces
// them as update preconditions (409 on a stale one), like the API server. Reactors run under the
// fake's lock, so the check and the store are atomic.
func rvClient(t *testing.T, objs ...runtime.Object) *fake.Clientset {
	t.Helper()
	cs := fake.NewClientset(objs...)
	var mu sync.Mutex
	next := int64(100)
	cs.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		// Dispatch on the verb: CreateAction and UpdateAction are the same interface.
		switch a.GetVerb() {
		case "create":
			m, err := meta.Accessor(a.(k8stesting.CreateAction).GetObject())
			if err != nil {
				return true, nil, err
			}
			next++
			m.SetResourceVersion(strconv.FormatInt(next, 10))
		case "update":
			m, err := meta.Accessor(a.(k8stesting.UpdateAction).GetObject())
			if err != nil {
				return true, nil, err
			}
			cur, err := cs.Tracker().Get(a.GetResource(), a.GetNamespace(), m.GetName())
			if err != nil {
				return true, nil, err
			}
			cm, _ := meta.Accessor(cur)
			if m.GetResourceVersion() != "" && m.GetResourceVersion() != cm.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), m.GetName(), errStale)
			}
			next++
			m.SetResourceVersion(strconv.FormatInt(next, 10))
		}
		return false, nil, nil
	})
	return cs
}

type staleErr struct{}

func (staleErr) Error() string { return "the object has been modified" }

var errStale = staleErr{}

// newStore returns a Store of cluster c1 on cs with a fake clock at t0 and instant retries.
func newStore(t *testing.T, cs *fake.Clientset, cluster string, opts ...Option) (*Store, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	opts = append([]Option{WithClock(clk), WithRetryPolicy(retry.Policy{MaxAttempts: 4, Timer: instantTimer{}})}, opts...)
	s, err := New(cs, cluster, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

// countActions counts the fake's recorded actions of verb on resource.
func countActions(cs *fake.Clientset, verb, resource string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}
