package reencrypt

import (
	"context"
	"errors"
	"net/http"
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

// TestOnPageReportsDonePagesInOrder: every reported position is after pages whose objects all
// reached an outcome; the counts grow with the positions; the end of the run is not reported.
func TestOnPageReportsDonePagesInOrder(t *testing.T) {
	f := newFakeAPI(t, 50, "a", "b")
	var p positions
	s := runOK(t, newEngine(t, f, func(o *Options) { o.PageSize, o.Concurrency = 10, 1; o.OnPage = p.record }))
	if s.Total.Rewritten != 50 {
		t.Fatalf("summary %+v", s.Total)
	}
	// 5 pages of 10, one worker: a position after each of pages 1..4; the fifth is the end of the
	// run. (With more workers, pages done together are reported once.)
	if len(p.seen) != 4 {
		t.Fatalf("positions %+v, want 4", p.seen)
	}
	for i, pos := range p.seen {
		if pos.Resource != "secrets" || pos.Continue == "" || p.done[i].Listed%10 != 0 || p.done[i].Listed >= 50 || p.done[i].Done() != p.done[i].Listed {
			t.Fatalf("position %d = %+v with %+v", i, pos, p.done[i])
		}
		if i > 0 && pos.Continue <= p.seen[i-1].Continue {
			t.Fatalf("positions out of order: %+v", p.seen)
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
	if !ok || pos.Continue == "" {
		t.Fatalf("no position reported: %+v", p.seen)
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

// TestResumeAcrossScopes: a position in the second namespace skips the first one.
func TestResumeAcrossScopes(t *testing.T) {
	f := newFakeAPI(t, 40, "a", "b")
	var p positions
	runOK(t, newEngine(t, f, func(o *Options) {
		o.PageSize, o.Concurrency = 10, 1
		o.Namespaces = []string{"a", "b"}
		o.OnPage = p.record
	}))
	if len(p.seen) < 2 || p.seen[1] != (Position{Resource: "secrets", Namespace: "b"}) {
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
		if p.seen[i].Continue <= p.seen[i-1].Continue || p.done[i].Listed <= p.done[i-1].Listed {
			t.Fatalf("positions out of order: %+v", p.seen)
		}
	}
}
