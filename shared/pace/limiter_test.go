package pace

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	testingclock "k8s.io/utils/clock/testing"
)

const ms = time.Millisecond

func newLimiter(t *testing.T, opts Options) (*Limiter, *testingclock.FakePassiveClock) {
	t.Helper()
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opts.Clock = clk
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l, clk
}

// round admits as many calls as the limit allows, lets latency pass and releases them all with o:
// one round trip of a client that keeps the limit busy.
func round(t *testing.T, l *Limiter, clk *testingclock.FakePassiveClock, latency time.Duration, o Outcome) int {
	t.Helper()
	n := l.Limit()
	permits := make([]Permit, n)
	for i := range permits {
		p, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		permits[i] = p
	}
	clk.SetTime(clk.Now().Add(latency))
	for _, p := range permits {
		p.Release(o)
	}
	return n
}

// calls makes n sequential calls of the given latency.
func calls(t *testing.T, l *Limiter, clk *testingclock.FakePassiveClock, n int, latency time.Duration, o Outcome) {
	t.Helper()
	for range n {
		p, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		clk.SetTime(clk.Now().Add(latency))
		p.Release(o)
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no max", Options{}},
		{"min over max", Options{Max: 2, Min: 3}},
		{"negative min", Options{Max: 2, Min: -1}},
		{"tolerance 1", Options{Max: 2, Tolerance: 1}},
		{"backoff 1", Options{Max: 2, Backoff: 1}},
		{"negative backoff", Options{Max: 2, Backoff: -0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); err == nil {
				t.Fatalf("New(%+v) accepted", tc.opts)
			}
		})
	}
	l, err := New(Options{Max: 4, Initial: 9})
	if err != nil {
		t.Fatal(err)
	}
	if l.Limit() != 4 {
		t.Fatalf("initial limit %d, want it capped at max 4", l.Limit())
	}
}

func TestNilLimiterAdmitsEverything(t *testing.T) {
	var l *Limiter
	for range 100 {
		p, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Release(Throttled)
	}
	if l.Limit() != 0 || l.Stats() != (Stats{}) {
		t.Fatalf("nil limiter: limit %d, stats %+v", l.Limit(), l.Stats())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *Limiter) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiters.Len()
}

func TestAcquireBoundsInFlightFirstComeFirstServed(t *testing.T) {
	l, _ := newLimiter(t, Options{Max: 8, Initial: 2})
	a, _ := l.Acquire(context.Background())
	b, _ := l.Acquire(context.Background())
	order := make(chan int, 3)
	permits := make(chan Permit, 3)
	for i := range 3 {
		go func() {
			p, err := l.Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			permits <- p
		}()
		waitFor(t, fmt.Sprintf("waiter %d to queue", i), func() bool { return l.queued() == i+1 })
	}
	select {
	case i := <-order:
		t.Fatalf("waiter %d admitted while the limit of 2 was in use", i)
	default:
	}
	a.Release(Answered)
	if i := <-order; i != 0 {
		t.Fatalf("waiter %d admitted first, want 0", i)
	}
	if l.queued() != 2 {
		t.Fatalf("%d queued after one release, want 2", l.queued())
	}
	b.Release(Answered)
	if i := <-order; i != 1 {
		t.Fatalf("waiter %d admitted second, want 1", i)
	}
	(<-permits).Release(Answered)
	if i := <-order; i != 2 {
		t.Fatalf("waiter %d admitted third, want 2", i)
	}
	(<-permits).Release(Answered)
	(<-permits).Release(Answered)
	if l.inflight != 0 {
		t.Fatalf("%d in flight after every release", l.inflight)
	}
}

func TestAcquireCanceledLeavesNoSlotBehind(t *testing.T) {
	l, _ := newLimiter(t, Options{Max: 4, Initial: 1})
	held, _ := l.Acquire(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx)
		errc <- err
	}()
	waitFor(t, "the waiter to queue", func() bool { return l.queued() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel: %v, want context.Canceled", err)
	}
	if l.queued() != 0 {
		t.Fatal("a canceled waiter stayed queued")
	}
	held.Release(Answered)
	// The slot is free again: a new call is admitted at once.
	p, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.Release(Answered)
	if _, err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with an ended context: %v", err)
	}
}

func TestBaselineIsTheMedianOfTheFirstCalls(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 8, BaselineSamples: 5})
	for i, d := range []time.Duration{50 * ms, 3 * ms, 4 * ms, 5 * ms} {
		calls(t, l, clk, 1, d, Answered)
		if l.Stats().Baseline != 0 {
			t.Fatalf("baseline set after %d samples, want after 5", i+1)
		}
	}
	calls(t, l, clk, 1, 6*ms, Answered)
	if got := l.Stats().Baseline; got != 5*ms {
		t.Fatalf("baseline %s, want the median 5ms (the slow first call does not count)", got)
	}
	if l.Limit() != 1 {
		t.Fatalf("limit %d while measuring, want 1", l.Limit())
	}
}

func TestAdditiveIncreaseUpToMax(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 12, BaselineSamples: 4, Window: 4})
	calls(t, l, clk, 4, 10*ms, Answered)
	// Each window holds max(limit, Window) answers; each window within tolerance adds one.
	for want := 2; want <= 12; want++ {
		n := max(l.Limit(), 4)
		calls(t, l, clk, n-1, 12*ms, Answered)
		if l.Limit() != want-1 {
			t.Fatalf("limit changed to %d before the window of %d was full", l.Limit(), n)
		}
		calls(t, l, clk, 1, 12*ms, Answered)
		if l.Limit() != want {
			t.Fatalf("limit %d after a fast window, want %d", l.Limit(), want)
		}
	}
	calls(t, l, clk, 100, 10*ms, Answered)
	if s := l.Stats(); s.Limit != 12 || s.Peak != 12 || s.Increases != 11 || s.Decreases != 0 {
		t.Fatalf("stats %+v, want the limit held at max 12 after 11 increases", s)
	}
}

func TestSlowWindowDecreasesMultiplicativelyDownToMin(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 40, Initial: 20, Min: 3, BaselineSamples: 4, Window: 4})
	calls(t, l, clk, 4, 10*ms, Answered)
	// 12.5ms is within 1.25x of 10ms: no decrease.
	round(t, l, clk, 12500*time.Microsecond, Answered)
	if l.Limit() != 21 {
		t.Fatalf("limit %d after a window at the tolerance, want 21", l.Limit())
	}
	for _, want := range []int{14, 9, 6, 4, 3, 3} {
		for range 50 {
			if l.Stats().Decreases > 0 && l.Limit() == want {
				break
			}
			before := l.Stats().Decreases
			round(t, l, clk, 13*ms, Answered)
			if l.Stats().Decreases != before || l.Limit() == 3 {
				break
			}
		}
		if l.Limit() != want {
			t.Fatalf("limit %d, want %d (x0.7, at least one less, never below min 3)", l.Limit(), want)
		}
	}
}

func TestThrottledHalvesAtOnceOncePerEpoch(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 64, Initial: 16})
	var permits []Permit
	for range 16 {
		p, _ := l.Acquire(context.Background())
		permits = append(permits, p)
	}
	clk.SetTime(clk.Now().Add(ms))
	permits[0].Release(Throttled)
	if l.Limit() != 8 {
		t.Fatalf("limit %d after a 429, want 8", l.Limit())
	}
	// The other calls of the same burst were started before the cut: their 429s and answers
	// describe the load already answered.
	for _, p := range permits[1:] {
		p.Release(Throttled)
	}
	if s := l.Stats(); s.Limit != 8 || s.Throttled != 16 || s.Decreases != 1 {
		t.Fatalf("stats %+v, want one decrease to 8 for one burst of 429s", s)
	}
	calls(t, l, clk, 1, ms, Throttled)
	if l.Limit() != 4 {
		t.Fatalf("limit %d after a 429 in the new epoch, want 4", l.Limit())
	}
}

func TestAnswersFromBeforeADecreaseDoNotCount(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 64, Initial: 4, BaselineSamples: 2, Window: 2})
	calls(t, l, clk, 2, 10*ms, Answered)
	old, _ := l.Acquire(context.Background())
	calls(t, l, clk, 1, ms, Throttled) // limit 4 -> 2, new epoch
	clk.SetTime(clk.Now().Add(time.Second))
	old.Release(Answered) // a slow answer from the old epoch
	calls(t, l, clk, 1, 10*ms, Answered)
	if l.Limit() != 2 || l.Stats().Decreases != 1 {
		t.Fatalf("limit %d after a stale slow answer, want 2 and no second decrease", l.Limit())
	}
	calls(t, l, clk, 1, 10*ms, Answered)
	if l.Limit() != 3 {
		t.Fatalf("limit %d after a fast window, want 3", l.Limit())
	}
}

func TestBaselineFollowsTheFastestWindow(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 64, BaselineSamples: 4, Window: 4})
	calls(t, l, clk, 4, 20*ms, Answered) // a busy start: baseline 20ms
	calls(t, l, clk, 4, 8*ms, Answered)
	if got := l.Stats().Baseline; got != 8*ms {
		t.Fatalf("baseline %s, want it lowered to 8ms", got)
	}
	before := l.Limit()
	calls(t, l, clk, 4, 14*ms, Answered) // within 1.25x of 20ms, not of 8ms
	if l.Limit() >= before {
		t.Fatalf("limit %d after 14ms windows, want below %d against the new baseline", l.Limit(), before)
	}
}

func TestLostChangesNothing(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 8, Initial: 4, BaselineSamples: 2})
	calls(t, l, clk, 50, time.Minute, Lost)
	if s := l.Stats(); s.Limit != 4 || s.Baseline != 0 || s.Lost != 50 || s.Answered != 0 {
		t.Fatalf("stats %+v after lost calls, want nothing changed", s)
	}
}

// TestConvergesBelowTheKnee simulates a server with capacity for 6 concurrent calls: beyond it
// every call queues (latency grows with the calls in flight). The limit must find the knee and
// stay near it, neither collapsing nor running to max.
func TestConvergesBelowTheKnee(t *testing.T) {
	const capacity, base = 6, 4 * ms
	l, clk := newLimiter(t, Options{Max: 64})
	latency := func(n int) time.Duration {
		if n <= capacity {
			return base
		}
		return base * time.Duration(n) / capacity
	}
	lo, hi := 64, 0
	for i := range 400 {
		n := round(t, l, clk, latency(l.Limit()), Answered)
		if i >= 200 {
			lo, hi = min(lo, n), max(hi, n)
		}
	}
	// 1.25x the baseline allows 7 calls in flight; a window mixing rounds may add one or two more
	// before a decrease takes the limit back to about the knee.
	if lo < 4 || hi > 11 {
		t.Fatalf("limit ranged over [%d, %d] in steady state, want within [4, 11] around the knee of %d", lo, hi, capacity)
	}
	if s := l.Stats(); s.Decreases == 0 || s.Peak > 12 {
		t.Fatalf("stats %+v: want decreases and a peak near the knee", s)
	}
}

func TestConcurrentUseNeverExceedsTheLimit(t *testing.T) {
	l, err := New(Options{Max: 16, Initial: 5, BaselineSamples: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	var inflight, peak atomic.Int64
	var wg sync.WaitGroup
	for g := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				p, err := l.Acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				n := inflight.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				inflight.Add(-1)
				o := Answered
				if (g+i)%97 == 0 {
					o = Lost
				}
				p.Release(o)
			}
		}()
	}
	wg.Wait()
	if peak.Load() > 5 || peak.Load() < 1 {
		t.Fatalf("peak in flight %d, want at most the limit 5", peak.Load())
	}
	if s := l.Stats(); s.Answered+s.Lost != 8000 || l.inflight != 0 || l.queued() != 0 {
		t.Fatalf("stats %+v, in flight %d, queued %d after 8000 calls", s, l.inflight, l.queued())
	}
}

func TestOutcomeOf(t *testing.T) {
	gr := schema.GroupResource{Resource: "secrets"}
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, Answered},
		{apierrors.NewConflict(gr, "a", errors.New("x")), Answered},
		{apierrors.NewNotFound(gr, "a"), Answered},
		{apierrors.NewInternalError(errors.New("kms")), Failed},
		{apierrors.NewServiceUnavailable("etcd"), Failed},
		{apierrors.NewBadRequest("bad"), Answered},
		{apierrors.NewTooManyRequests("slow down", 1), Throttled},
		{apierrors.NewServerTimeout(gr, "patch", 1), Throttled},
		{apierrors.NewTimeoutError("timeout", 1), Throttled},
		{fmt.Errorf("patch: %w", context.DeadlineExceeded), Throttled},
		{&url.Error{Op: "Patch", URL: "https://x", Err: errors.New("connection reset by peer")}, Lost},
		{context.Canceled, Lost},
	} {
		if got := OutcomeOf(tc.err); got != tc.want {
			t.Errorf("OutcomeOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// The baseline is the latency at the concurrency the caller starts at: a limiter that starts at
// 16 in flight and keeps the latency it measured there neither grows past a knee nor shrinks to
// one call because 16 calls are slower than one.
func TestBaselineIsMeasuredAtTheInitialConcurrency(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 32, Initial: 16, BaselineSamples: 16, Window: 8, Tolerance: 2})
	round(t, l, clk, 20*ms, Answered) // 16 calls at 16 in flight, 20 ms each
	if s := l.Stats(); s.Baseline != 20*ms || s.BaselineLimit != 16 || s.Limit != 16 {
		t.Fatalf("stats %+v: want the baseline 20ms measured at 16 in flight", s)
	}
	for range 20 {
		round(t, l, clk, 25*ms, Answered) // within 2x: grows
	}
	if s := l.Stats(); s.Limit != 32 || s.Decreases != 0 {
		t.Fatalf("stats %+v: want the limit at its max 32 with no decrease", s)
	}
}

// Windows at a lower limit than the baseline's do not lower the baseline: after a real slowdown the
// limit comes back to the concurrency it was measured at instead of ratcheting down to one call.
func TestBaselineIsNotLoweredByWindowsBelowItsConcurrency(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 16, Initial: 16, BaselineSamples: 16, Window: 4, Tolerance: 2})
	round(t, l, clk, 20*ms, Answered)
	round(t, l, clk, 100*ms, Answered) // a real slowdown: 16 -> 11
	if got := l.Limit(); got != 11 {
		t.Fatalf("limit %d after a slow window, want 11", got)
	}
	for range 4 { // at 11, 12, 13 and 14 in flight
		round(t, l, clk, 5*ms, Answered) // fewer in flight, faster: must not become the norm
	}
	if s := l.Stats(); s.Baseline != 20*ms {
		t.Fatalf("baseline %s, want 20ms kept (windows below 16 in flight do not lower it)", s.Baseline)
	}
	for range 10 {
		round(t, l, clk, 30*ms, Answered) // 1.5x the baseline at 16: fine
	}
	if got := l.Limit(); got != 16 {
		t.Fatalf("limit %d, want back at 16", got)
	}
}

// A window in which more than a quarter of the calls failed with a server error shrinks the limit;
// a few failures do not.
func TestServerErrorsShrinkTheLimit(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 8, Initial: 8, BaselineSamples: 8, Window: 8})
	round(t, l, clk, 10*ms, Answered)
	calls(t, l, clk, 7, 10*ms, Answered)
	calls(t, l, clk, 1, 10*ms, Failed) // 1 of 8: within
	if s := l.Stats(); s.Limit != 8 || s.Decreases != 0 || s.Failed != 1 {
		t.Fatalf("stats %+v after 1 failure in 8: want no decrease", s)
	}
	calls(t, l, clk, 5, 10*ms, Answered)
	calls(t, l, clk, 3, 10*ms, Failed) // 3 of 8: too many
	if s := l.Stats(); s.Limit != 5 || s.Decreases != 1 {
		t.Fatalf("stats %+v after 3 failures in 8: want one decrease to 5", s)
	}
}

// 429s that client-go retried on its own reach the limiter through Throttle: the first halves the
// limit, the rest of the same burst do not, and the next burst after a window of answers does.
func TestThrottleHalvesOncePerBurst(t *testing.T) {
	l, clk := newLimiter(t, Options{Max: 64, Initial: 64, BaselineSamples: 4, Window: 4})
	for range 10 {
		l.Throttle()
	}
	if s := l.Stats(); s.Limit != 32 || s.Throttles != 10 || s.Decreases != 1 {
		t.Fatalf("stats %+v after a burst of 10 429s: want one halving to 32", s)
	}
	calls(t, l, clk, 31, 10*ms, Answered) // less than a window (the limit, 32)
	l.Throttle()
	if got := l.Limit(); got != 32 {
		t.Fatalf("limit %d: a 429 within the window of the last cut cut again", got)
	}
	calls(t, l, clk, 1, 10*ms, Answered)
	l.Throttle()
	if got := l.Limit(); got != 16 {
		t.Fatalf("limit %d: want 16 after a 429 a window later", got)
	}
	var nl *Limiter
	nl.Throttle() // a nil limiter ignores it
}
