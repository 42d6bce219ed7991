package reencrypt

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rekey-dev/rekey/shared/pace"
)

// inFlight makes f hold each PATCH briefly and records the most PATCHes in flight at once.
func inFlight(f *fakeAPI) *atomic.Int64 {
	var now, peak atomic.Int64
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method != http.MethodPatch {
			return false
		}
		n := now.Add(1)
		for old := peak.Load(); n > old && !peak.CompareAndSwap(old, n); old = peak.Load() {
		}
		time.Sleep(2 * time.Millisecond) // let the workers overlap
		now.Add(-1)
		return false
	}
	return &peak
}

func TestPaceBoundsPatchesInFlight(t *testing.T) {
	f := newFakeAPI(t, 120, "a", "b")
	peak := inFlight(f)
	lim, err := pace.New(pace.Options{Max: 3, Initial: 3, BaselineSamples: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := runOK(t, newEngine(t, f, func(o *Options) { o.Concurrency = 16; o.Pace = lim }))
	if s.Total.Rewritten != 120 || !s.Complete {
		t.Fatalf("summary %+v, want all 120 rewritten", s.Total)
	}
	if p := peak.Load(); p > 3 {
		t.Fatalf("%d patches in flight at once with a limit of 3", p)
	}
	if st := lim.Stats(); st.Answered != 120 {
		t.Fatalf("limiter stats %+v, want 120 answered calls", st)
	}

	// Without a limiter (--max-speed) the 16 workers patch at once.
	f = newFakeAPI(t, 120, "a", "b")
	peak = inFlight(f)
	runOK(t, newEngine(t, f, func(o *Options) { o.Concurrency = 16 }))
	if p := peak.Load(); p <= 3 {
		t.Fatalf("only %d patches in flight at once without a limiter and 16 workers", p)
	}
}

func TestPaceLowersTheLimitOn429(t *testing.T) {
	f := newFakeAPI(t, 40, "a")
	var refused atomic.Int64
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodPatch && refused.Add(1) <= 3 {
			status(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, "slow down")
			return true
		}
		return false
	}
	lim, err := pace.New(pace.Options{Max: 8, Initial: 8})
	if err != nil {
		t.Fatal(err)
	}
	s := runOK(t, newEngine(t, f, func(o *Options) { o.Concurrency = 8; o.Pace = lim }))
	if s.Total.Rewritten != 40 {
		t.Fatalf("summary %+v, want all 40 rewritten after the retries", s.Total)
	}
	if st := lim.Stats(); st.Throttled != 3 || st.Decreases == 0 {
		t.Fatalf("limiter stats %+v, want 3 throttled calls and the limit cut", st)
	}
	// The summary says why the run went at its speed.
	if p := s.Pace; p == nil || p.Throttled != 3 || p.Decreases == 0 || p.Max != 8 || p.Limit >= 8 || p.Peak != 8 {
		t.Fatalf("summary pace %+v, want 3 throttled, the limit cut below its max 8", p)
	}
}

func TestSummaryHasNoPaceWhenUnpaced(t *testing.T) {
	f := newFakeAPI(t, 10, "a")
	if s := runOK(t, newEngine(t, f, func(o *Options) { o.Concurrency = 4 })); s.Pace != nil {
		t.Fatalf("summary pace %+v without a limiter (--max-speed), want none", s.Pace)
	}
}
