package reencrypt

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// positions records what OnPage reports.
type positions struct {
	mu   sync.Mutex
	seen []Position
	done []Counts
}

func (p *positions) record(next Position, done Counts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, next)
	p.done = append(p.done, done)
}

func (p *positions) last() (Position, Counts, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		return Position{}, Counts{}, false
	}
	return p.seen[len(p.seen)-1], p.done[len(p.done)-1], true
}

// before reports whether position a comes before b in the fake API's list order (its continue
// tokens are the next key; a position with After is later than its page's start).
func before(a, b Position) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	if a.Continue != b.Continue {
		return a.Continue < b.Continue
	}
	return a.After < b.After
}

// TestOnPageReportsPositionsInOrder: every reported position is after objects that all reached an
// outcome; positions move object by object inside a page (After) and to the next page's token once
// a page is done; the counts grow with the positions; the end of the run is not reported.
func TestOnPageReportsPositionsInOrder(t *testing.T) {
	f := newFakeAPI(t, 50, "a", "b")
	var p positions
	s := runOK(t, newEngine(t, f, func(o *Options) { o.PageSize, o.Concurrency = 10, 1; o.OnPage = p.record }))
	if s.Total.Rewritten != 50 {
		t.Fatalf("summary %+v", s.Total)
	}
	// One worker: a position after each object but the last (the end of the run); 4 of them are
	// the next page's start (After empty), the others inside a page.
	if len(p.seen) != 49 {
		t.Fatalf("%d positions, want 49: %+v", len(p.seen), p.seen)
	}
	pageStarts := 0
	for i, pos := range p.seen {
		d := p.done[i]
		if pos.Resource != "secrets" || d.Listed != int64(i+1) || d.Done() != d.Listed {
			t.Fatalf("position %d = %+v with %+v, want %d objects done before it", i, pos, d, i+1)
		}
		if pos.After == "" {
			pageStarts++
			if pos.Continue == "" || d.Listed%10 != 0 {
				t.Fatalf("position %d = %+v with %+v: a page start must follow whole pages", i, pos, d)
			}
		}
		if i > 0 && !before(p.seen[i-1], pos) {
			t.Fatalf("positions out of order at %d: %+v then %+v", i, p.seen[i-1], pos)
		}
	}
	if pageStarts != 4 {
		t.Fatalf("%d page starts reported, want 4", pageStarts)
	}
}

// TestEveryPositionResumesExactlyTheRest: a run resumed from any reported position, inside a page
// or at a page start, lists exactly the objects after it: between the first run's counts up to
// the position and the second run, every object is listed once.
func TestEveryPositionResumesExactlyTheRest(t *testing.T) {
	const n = 60
	f := newFakeAPI(t, n, "a", "b")
	var p positions
	runOK(t, newEngine(t, f, func(o *Options) { o.PageSize, o.Concurrency = 7, 3; o.OnPage = p.record }))
	if len(p.seen) < 10 {
		t.Fatalf("only %d positions reported", len(p.seen))
	}
	for i, pos := range p.seen {
		s := runOK(t, newEngine(t, f, func(o *Options) { o.PageSize = 7; o.Resume = &pos }))
		if p.done[i].Listed+s.Total.Listed != n {
			t.Fatalf("position %d %+v: %d done before it, %d listed after it: want %d in all", i, pos, p.done[i].Listed, s.Total.Listed, n)
		}
	}
}

// TestSlowPatchesStillMoveThePosition: pages far longer than a run's time (a page of 100 at 40 ms
// a patch and 2 in flight is ~2 s; each run has ~0.5 s): every run stops before its deadline
// having moved the position, and successive runs resumed from it finish the list. Positions that
// moved only at page boundaries would never move here.
func TestSlowPatchesStillMoveThePosition(t *testing.T) {
	const n = 100
	f := newFakeAPI(t, n, "a")
	f.hook = func(_ http.ResponseWriter, r *http.Request, _ string) bool {
		if r.Method == http.MethodPatch {
			time.Sleep(40 * time.Millisecond)
		}
		return false
	}
	var pos Position
	var total int64
	for run := 1; ; run++ {
		if run > 20 {
			t.Fatalf("not finished after 20 runs (%d done)", total)
		}
		var p positions
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		s, err := newEngine(t, f, func(o *Options) {
			o.PageSize, o.Concurrency, o.StopMargin = 100, 2, 200*time.Millisecond
			o.Resume, o.OnPage = &pos, p.record
		}).Run(ctx)
		cancel()
		if err == nil {
			total += s.Total.Done()
			t.Logf("run %d finished the list: %d objects in all", run, total)
			break
		}
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("run %d: %v", run, err)
		}
		next, done, ok := p.last()
		if !ok || done.Done() == 0 || !before(pos, next) {
			t.Fatalf("run %d stopped without moving the position (from %+v to %+v, %d done)", run, pos, next, done.Done())
		}
		pos, total = next, total+done.Done()
	}
	if total != n {
		t.Fatalf("%d objects done over the runs, want %d", total, n)
	}
	for k, stale := range f.stale {
		if stale {
			t.Fatalf("%s was never rewritten", k)
		}
	}
}

// TestResumeContinuesFromPosition: a run cut off after some pages is resumed by a second run from
// the last reported position; the second run lists only the rest, and between them every object
// is rewritten exactly once.
func TestResumeContinuesFromPosition(t *testing.T) {
	f := newFakeAPI(t, 100, "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var p positions
	e := newEngine(t, f, func(o *Options) {
		o.PageSize, o.Concurrency = 10, 1
		o.OnPage = func(next Position, done Counts) {
			p.record(next, done)
			if len(p.seen) == 3 {
				cancel()
			}
		}
	})
	s1, err := e.Run(ctx)
	if err == nil || s1.Complete {
		t.Fatalf("first run: %v complete=%v, want stopped", err, s1.Complete)
	}
	pos, done, ok := p.last()
	if !ok || pos.After == "" {
		t.Fatalf("no position inside the first page reported: %+v", p.seen)
	}

	var lists []string
	f.hook = func(_ http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodGet && key == "/" {
			f.mu.Lock()
			lists = append(lists, r.URL.Query().Get("continue"))
			f.mu.Unlock()
		}
		return false
	}
	s2 := runOK(t, newEngine(t, f, func(o *Options) { o.PageSize = 10; o.Resume = &pos }))
	if len(lists) == 0 || lists[0] != pos.Continue {
		t.Fatalf("second run listed from %q, want the position's token %q", lists, pos.Continue)
	}
	if done.Listed+s2.Total.Listed != 100 {
		t.Fatalf("first run committed %d, second listed %d: want 100 between them", done.Listed, s2.Total.Listed)
	}
	if got := s1.Total.Rewritten + s2.Total.Rewritten; got > 100 || s2.Total.Rewritten == 0 {
		t.Fatalf("rewritten %d + %d: want the second run to finish the first's work, nothing twice", s1.Total.Rewritten, s2.Total.Rewritten)
	}
	for k, stale := range f.stale {
		if stale {
			t.Fatalf("%s was never rewritten", k)
		}
	}
}

// TestResumeWithExpiredTokenRestartsTheList: a resumed token that expired (and no other offered)
// lists the scope again from the top; rewriting is idempotent, so objects done before come back
// current.
func TestResumeWithExpiredTokenRestartsTheList(t *testing.T) {
	f := newFakeAPI(t, 30, "a")
	first := runOK(t, newEngine(t, f, func(o *Options) { o.PageSize = 10 }))
	if first.Total.Rewritten != 30 {
		t.Fatalf("first %+v", first.Total)
	}
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodGet && key == "/" && r.URL.Query().Get("continue") == "old-token" {
			expire410(w, "")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, func(o *Options) {
		o.PageSize = 10
		o.Resume = &Position{Resource: "secrets", Continue: "old-token"}
	}))
	if s.Total.Listed != 30 || s.Total.Current != 30 || !s.Complete {
		t.Fatalf("summary %+v, want all 30 listed again and current", s.Total)
	}
}

// TestResumeWithExpiredTokenSkipsWhatIsDone: a resumed position inside a page whose token expired
// (and no other offered) lists the scope from the top and still skips the objects up to After.
func TestResumeWithExpiredTokenSkipsWhatIsDone(t *testing.T) {
	f := newFakeAPI(t, 30, "a")
	f.hook = func(w http.ResponseWriter, r *http.Request, key string) bool {
		if r.Method == http.MethodGet && key == "/" && r.URL.Query().Get("continue") == "old-token" {
			expire410(w, "")
			return true
		}
		return false
	}
	s := runOK(t, newEngine(t, f, func(o *Options) {
		o.PageSize = 10
		o.Resume = &Position{Resource: "secrets", Continue: "old-token", After: "a/s-0014"}
	}))
	if s.Total.Listed != 15 || s.Total.Rewritten != 15 || !s.Complete {
		t.Fatalf("summary %+v, want the 15 objects after a/s-0014 only", s.Total)
	}
	for k, stale := range f.stale {
		if want := k <= "a/s-0014"; stale != want {
			t.Fatalf("%s stale=%v after the run, want %v", k, stale, want)
		}
	}
}

// TestResumeAcrossScopes: a position in the second namespace skips the first one.
func TestResumeAcrossScopes(t *testing.T) {
	f := newFakeAPI(t, 40, "a", "b")
	var p positions
	runOK(t, newEngine(t, f, func(o *Options) {
		o.PageSize, o.Concurrency = 10, 1
		o.Namespaces = []string{"a", "b"}
		o.OnPage = p.record
	}))
	if !slices.Contains(p.seen, Position{Resource: "secrets", Namespace: "b"}) {
		t.Fatalf("positions %+v: want the start of namespace b after a's two pages", p.seen)
	}
	s := runOK(t, newEngine(t, f, func(o *Options) {
		o.PageSize, o.Namespaces = 10, []string{"a", "b"}
		o.Resume = &Position{Resource: "secrets", Namespace: "b"}
	}))
	if s.Total.Listed != 20 || f.callCount("LIST") != 4+2 {
		t.Fatalf("resumed at b: listed %d with %d lists in all, want b's 20 in 2 lists", s.Total.Listed, f.callCount("LIST"))
	}
}

// TestStopMarginLetsInFlightPatchesFinish: StopMargin before the deadline the run takes no new
// work, the patches in flight complete (none fails or is cut off), and the last position lets a
// second run finish the rest.
func TestStopMarginLetsInFlightPatchesFinish(t *testing.T) {
	f := newFakeAPI(t, 200, "a")
	f.hook = func(_ http.ResponseWriter, r *http.Request, _ string) bool {
		if r.Method == http.MethodPatch {
			time.Sleep(20 * time.Millisecond) // a slow API server, so patches are in flight at the stop
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p positions
	s, err := newEngine(t, f, func(o *Options) {
		o.PageSize, o.Concurrency = 10, 4
		o.StopMargin = 10*time.Second - 300*time.Millisecond
		o.OnPage = p.record
	}).Run(ctx)
	if !errors.Is(err, ErrStopped) || s.Complete || !strings.Contains(s.StopReason, "before the deadline") {
		t.Fatalf("run: %v (complete=%v, reason %q), want ErrStopped", err, s.Complete, s.StopReason)
	}
	if s.Total.Failed != 0 || s.Total.Rewritten == 0 || s.Total.NotAttempted == 0 || s.Total.Listed != s.Total.Done()+s.Total.NotAttempted {
		t.Fatalf("summary %+v: want some rewritten, none failed, the rest not attempted", s.Total)
	}
	pos, done, ok := p.last()
	if !ok {
		t.Fatal("no position reported before the stop")
	}
	f.hook = nil
	s2 := runOK(t, newEngine(t, f, func(o *Options) { o.PageSize = 10; o.Resume = &pos }))
	if done.Listed+s2.Total.Listed != 200 || s.Total.Rewritten+s2.Total.Rewritten != 200 {
		t.Fatalf("first %+v (committed %+v), second %+v: want 200 rewritten between them", s.Total, done, s2.Total)
	}
}

// TestSlowOnPageHoldsUpOnlyItsCaller: while one OnPage call is slow (a checkpoint write), the other
// workers go on finishing objects; the positions still come one at a time and in list order.
func TestSlowOnPageHoldsUpOnlyItsCaller(t *testing.T) {
	const n, workers = 200, 4
	f := newFakeAPI(t, n, "a")
	var p positions
	var calls, inCall atomic.Int32
	progressed := make(chan bool, 1)
	s := runOK(t, newEngine(t, f, func(o *Options) {
		o.PageSize, o.Concurrency = 10, workers
		o.OnPage = func(next Position, done Counts) {
			if inCall.Add(1) != 1 {
				t.Error("OnPage called concurrently")
			}
			defer inCall.Add(-1)
			p.record(next, done)
			if calls.Add(1) != 1 {
				return
			}
			// The first call waits until the other workers patched well past what they could
			// if every worker's finish waited for this call.
			start := f.patchCount()
			deadline := time.Now().Add(5 * time.Second)
			for f.patchCount() < start+4*workers && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			progressed <- f.patchCount() >= start+4*workers
		}
	}))
	if s.Total.Rewritten != n {
		t.Fatalf("summary %+v, want all %d rewritten", s.Total, n)
	}
	if !<-progressed {
		t.Fatalf("no progress while OnPage was slow: the workers waited for it")
	}
	for i := 1; i < len(p.seen); i++ {
		if !before(p.seen[i-1], p.seen[i]) || p.done[i].Listed <= p.done[i-1].Listed {
			t.Fatalf("positions out of order: %+v", p.seen)
		}
	}
}
