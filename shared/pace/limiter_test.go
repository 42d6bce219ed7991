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
		{apierrors.NewInternalError(errors.New("kms")), Answered},
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
