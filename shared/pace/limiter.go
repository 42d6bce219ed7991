package pace

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/utils/clock"
)

// Defaults of Options fields left zero.
const (
	DefaultMin             = 1
	DefaultInitial         = 1
	DefaultBaselineSamples = 16
	DefaultWindow          = 8
	DefaultTolerance       = 1.25
	DefaultBackoff         = 0.7
	// throttleBackoff is the decrease after a 429 or a server timeout: the server said so.
	throttleBackoff = 0.5
)

// Outcome is what became of one paced call.
type Outcome int

const (
	// Answered: the server answered (any status but 429 or a timeout). Its latency is a sample.
	Answered Outcome = iota
	// Throttled: the server refused for load (429 Too Many Requests) or timed out. The limit is
	// cut at once.
	Throttled
	// Lost: no answer that says anything about load (a reset connection, a canceled call). It is
	// not a sample and changes nothing.
	Lost
	// Failed: the server answered with an error of its own (a 5xx other than a timeout). It is not
	// a latency sample, but a window in which more than a quarter of the calls failed shrinks the
	// limit as a slow one does.
	Failed
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case Answered:
		return "answered"
	case Throttled:
		return "throttled"
	case Lost:
		return "lost"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Options configure a Limiter. Only Max is required.
type Options struct {
	// Max bounds the calls in flight (rekey's --concurrency). Required, at least 1.
	Max int
	// Min is the lowest limit (default DefaultMin); at least 1, at most Max.
	Min int
	// Initial is the limit while the baseline is measured (default DefaultInitial, within
	// [Min, Max]): the concurrency the caller means to run at, so that the baseline is the latency
	// at that concurrency, not that of a lone call.
	Initial int
	// BaselineSamples is how many answered calls measure the baseline latency (their median).
	BaselineSamples int
	// Window is the least number of answered calls per adjustment (default DefaultWindow); a
	// window holds max(limit, Window) calls.
	Window int
	// Tolerance is how many times the baseline a window's median latency may be before the limit
	// shrinks (default DefaultTolerance; more than 1).
	Tolerance float64
	// Backoff multiplies the limit when a window is too slow (default DefaultBackoff; between 0
	// and 1).
	Backoff float64
	// Clock measures latencies (default the real clock).
	Clock clock.PassiveClock
	// Logger receives the baseline and each decrease at debug level (default: none).
	Logger *zerolog.Logger
	// Mode describes, for the run's summary, why the caller chose these options (Stats.Mode).
	Mode string
}

func (o *Options) defaults() error {
	if o.Max < 1 {
		return fmt.Errorf("pace: max %d: want at least 1", o.Max)
	}
	if o.Min == 0 {
		o.Min = DefaultMin
	}
	if o.Min < 1 || o.Min > o.Max {
		return fmt.Errorf("pace: min %d: want between 1 and max %d", o.Min, o.Max)
	}
	if o.Initial == 0 {
		o.Initial = DefaultInitial
	}
	o.Initial = min(max(o.Initial, o.Min), o.Max)
	if o.BaselineSamples <= 0 {
		o.BaselineSamples = DefaultBaselineSamples
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Tolerance == 0 {
		o.Tolerance = DefaultTolerance
	}
	if o.Tolerance <= 1 {
		return fmt.Errorf("pace: tolerance %g: want more than 1", o.Tolerance)
	}
	if o.Backoff == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Backoff <= 0 || o.Backoff >= 1 {
		return fmt.Errorf("pace: backoff %g: want between 0 and 1", o.Backoff)
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return nil
}

// Stats describe a Limiter so far.
type Stats struct {
	// Mode is Options.Mode.
	Mode string
	// Limit is the current limit; Peak the highest it reached.
	Limit, Peak int
	// Baseline is the baseline latency (0 while it is being measured).
	Baseline time.Duration
	// BaselineLimit is the limit the baseline was measured at.
	BaselineLimit int
	// Answered, Throttled, Lost and Failed count the released calls by outcome; Throttles counts
	// the 429s reported by Throttle (answers client-go retried after their Retry-After).
	Answered, Throttled, Lost, Failed, Throttles int64
	// Increases and Decreases count the limit's changes.
	Increases, Decreases int64
}

// Limiter bounds and adapts the calls in flight; see the package documentation. Create it with New.
// A nil *Limiter admits everything. It is safe for concurrent use.
type Limiter struct {
	opts Options
	log  zerolog.Logger

	mu       sync.Mutex
	limit    int
	inflight int
	waiters  list.List // of *waiter, first come first served
	epoch    uint64    // bumped by every decrease: older answers no longer count
	samples  []time.Duration
	failed   int // Failed outcomes in the current window
	// settled counts the answered calls since the last decrease: Throttle cuts again only after a
	// window of them.
	settled int
	stats   Stats
}

type waiter struct {
	ready   chan struct{}
	granted bool // a slot was counted for it; guarded by Limiter.mu
}

// New returns a Limiter at opts.Initial, measuring its baseline.
func New(opts Options) (*Limiter, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	l := &Limiter{opts: opts, limit: opts.Initial, log: zerolog.Nop()}
	if opts.Logger != nil {
		l.log = *opts.Logger
	}
	l.stats.Peak = l.limit
	l.stats.Mode = opts.Mode
	return l, nil
}

// Permit is one admitted call. Release it exactly once when the call ends.
type Permit struct {
	l     *Limiter
	start time.Time
	epoch uint64
}

// Acquire waits until fewer calls than the limit are in flight (first come, first served) and
// admits one, or returns ctx's error. A nil Limiter admits at once.
func (l *Limiter) Acquire(ctx context.Context) (Permit, error) {
	if l == nil {
		return Permit{}, nil
	}
	if err := ctx.Err(); err != nil {
		return Permit{}, fmt.Errorf("pace: %w", err)
	}
	l.mu.Lock()
	if l.inflight < l.limit && l.waiters.Len() == 0 {
		l.inflight++
		p := l.permit()
		l.mu.Unlock()
		return p, nil
	}
	w := &waiter{ready: make(chan struct{})}
	e := l.waiters.PushBack(w)
	l.mu.Unlock()
	select {
	case <-w.ready:
		l.mu.Lock()
		p := l.permit()
		l.mu.Unlock()
		return p, nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			// The slot came as ctx ended: hand it on.
			l.inflight--
			l.grant()
		} else {
			l.waiters.Remove(e)
		}
		l.mu.Unlock()
		return Permit{}, fmt.Errorf("pace: %w", ctx.Err())
	}
}

// permit starts timing an admitted call. l.mu is held.
func (l *Limiter) permit() Permit {
	return Permit{l: l, start: l.opts.Clock.Now(), epoch: l.epoch}
}

// grant admits waiters while the limit allows. l.mu is held.
func (l *Limiter) grant() {
	for l.inflight < l.limit && l.waiters.Len() > 0 {
		w := l.waiters.Remove(l.waiters.Front()).(*waiter)
		w.granted = true
		l.inflight++
		close(w.ready)
	}
}

// Release ends the call: its latency (for Answered) and outcome adapt the limit, and the next
// waiters are admitted. A Permit of a nil Limiter does nothing.
func (p Permit) Release(o Outcome) {
	l := p.l
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	l.observe(p.epoch, l.opts.Clock.Since(p.start), o)
	l.grant()
}

// observe adapts the limit to one released call. l.mu is held.
func (l *Limiter) observe(epoch uint64, latency time.Duration, o Outcome) {
	switch o {
	case Lost:
		l.stats.Lost++
		return
	case Failed:
		l.stats.Failed++
		if epoch == l.epoch && l.stats.Baseline != 0 {
			l.failed++
			l.judge()
		}
		return
	case Throttled:
		l.stats.Throttled++
		if epoch == l.epoch {
			l.decrease(throttleBackoff, "throttled")
		}
		return
	}
	l.stats.Answered++
	l.settled++
	if epoch != l.epoch {
		return // started before the last decrease
	}
	l.samples = append(l.samples, latency)
	if l.stats.Baseline == 0 {
		if len(l.samples) < l.opts.BaselineSamples {
			return
		}
		l.stats.Baseline = max(median(l.samples), time.Nanosecond)
		l.stats.BaselineLimit = l.limit
		l.samples = l.samples[:0]
		l.log.Debug().Dur("baseline", l.stats.Baseline).Int("limit", l.limit).Msg("pace: baseline latency measured")
		return
	}
	l.judge()
}

// judge ends a full window: too slow or too many failures shrink the limit, otherwise it grows by
// one. l.mu is held.
func (l *Limiter) judge() {
	if len(l.samples)+l.failed < max(l.limit, l.opts.Window) {
		return
	}
	failed, answered := l.failed, len(l.samples)
	l.failed = 0
	if failed*4 > failed+answered {
		l.samples = l.samples[:0]
		l.decrease(l.opts.Backoff, fmt.Sprintf("%d of %d calls failed", failed, failed+answered))
		return
	}
	m := median(l.samples)
	l.samples = l.samples[:0]
	// The baseline follows the fastest window, but only one run at least at the concurrency it
	// was measured at: the lower latency of fewer calls in flight is not the norm to hold.
	if m < l.stats.Baseline && l.limit >= l.stats.BaselineLimit {
		l.stats.Baseline = max(m, time.Nanosecond)
	}
	if float64(m) > l.opts.Tolerance*float64(l.stats.Baseline) {
		l.decrease(l.opts.Backoff, fmt.Sprintf("median latency %s over %.1fx the baseline %s", m, l.opts.Tolerance, l.stats.Baseline))
		return
	}
	if l.limit < l.opts.Max {
		l.limit++
		l.stats.Increases++
		l.stats.Peak = max(l.stats.Peak, l.limit)
	}
}

// decrease multiplies the limit by factor (at least one less, at least Min) and starts a new
// epoch. l.mu is held.
func (l *Limiter) decrease(factor float64, why string) {
	l.epoch++
	l.samples = l.samples[:0]
	l.failed = 0
	l.settled = 0
	if l.limit <= l.opts.Min {
		return
	}
	next := min(int(float64(l.limit)*factor), l.limit-1)
	l.limit = max(next, l.opts.Min)
	l.stats.Decreases++
	l.log.Debug().Int("limit", l.limit).Str("why", why).Msg("pace: limit lowered")
}

// Throttle reports a 429 the API server answered to a call that client-go then retried on its own
// after the answer's Retry-After (API Priority and Fairness rejecting a request its queues could
// not hold): the server asked for less, so the limit is halved, at most once per window of
// answered calls (the 429s of one burst are one signal). A nil Limiter ignores it.
func (l *Limiter) Throttle() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.Throttles++
	if l.stats.Throttles > 1 && l.settled < max(l.limit, l.opts.Window) {
		return
	}
	l.decrease(throttleBackoff, "the API server answered 429 (API Priority and Fairness)")
}

// Limit returns the current limit (0 for a nil Limiter, which does not limit).
func (l *Limiter) Limit() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// Stats returns the limiter's statistics so far (zero for a nil Limiter).
func (l *Limiter) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Limit = l.limit
	return s
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
