package reencrypt

import (
	"errors"
	"sync"
)

// ErrStopped is the cause of a run that stopped taking work Options.StopMargin before its
// context's deadline: objects in flight finished, the rest are NotAttempted, and the last position
// reported to Options.OnPage is where a later run resumes.
var ErrStopped = errors.New("stopped taking work before the deadline")

// Position is where a run resumes: the list of Resource (a Target's Name) in Namespace ("" when
// the run is not limited to namespaces) continues from the continue token Continue ("" = from the
// start of that scope). Every object listed before it reached an outcome. The zero Position is the
// start of the run.
type Position struct {
	Resource  string `json:"resource,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Continue  string `json:"continue,omitempty"`
}

// IsStart reports whether p is the start of a run.
func (p Position) IsStart() bool { return p == Position{} }

// Plus returns c with o's counts added.
func (c Counts) Plus(o Counts) Counts {
	c.add(o)
	return c
}

// page is one listed page: its objects are handed to the workers, and when each reached an outcome
// the run may resume at next.
type page struct {
	outstanding int  // objects handed on without an outcome yet
	sealed      bool // the lister handed on the whole page
	broken      bool // an object was left NotAttempted: the page is not done in this run
	next        Position
	counts      Counts
}

// pager reports, in list order, the positions after which every listed object reached an
// outcome (Options.OnPage). Pages finish out of order (workers run concurrently); a position is
// reported only when its page and every page before it are done.
type pager struct {
	mu      sync.Mutex
	pending []*page
	blocked bool // a page was broken: no later position is safe in this run
	done    Counts
	found   uint64 // positions found so far, numbered in list order
	report  func(Position, Counts)

	// The report is called outside mu, so that a slow one (a checkpoint write) holds up only the
	// goroutine that found the position, not every worker finishing an object. reportMu keeps the
	// calls one at a time and in list order: a position older than the last reported is dropped.
	reportMu sync.Mutex
	reported uint64
}

// found is a position to report: the seq-th found, with the counts done up to it.
type found struct {
	seq  uint64
	next Position
	done Counts
}

// open starts a page.
func (p *pager) open() *page {
	pg := &page{}
	p.mu.Lock()
	p.pending = append(p.pending, pg)
	p.mu.Unlock()
	return pg
}

// handOn counts an object of pg handed to the workers (or, in a dry run, listed).
func (p *pager) handOn(pg *page, toWorkers bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pg.counts.Listed++
	if toWorkers {
		pg.outstanding++
	}
}

// finish records an object's outcome.
func (p *pager) finish(pg *page, o Outcome) {
	p.mu.Lock()
	pg.outstanding--
	switch o {
	case Rewritten:
		pg.counts.Rewritten++
	case Current:
		pg.counts.Current++
	case Deleted:
		pg.counts.Deleted++
	case Failed:
		pg.counts.Failed++
	default:
		pg.counts.NotAttempted++
		pg.broken = true
	}
	f := p.advance()
	p.mu.Unlock()
	p.deliver(f)
}

// seal records that the lister handed on all of pg; a later run resumes at next once it is done.
func (p *pager) seal(pg *page, next Position) {
	p.mu.Lock()
	pg.sealed, pg.next = true, next
	f := p.advance()
	p.mu.Unlock()
	p.deliver(f)
}

// breakPage records that the lister left pg unfinished (the run stopped while handing it on).
func (p *pager) breakPage(pg *page) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pg.broken = true
}

// advance pops the done pages at the head and returns the last one's position to report (nil for
// none). Called with mu held.
func (p *pager) advance() *found {
	var last *page
	for !p.blocked && len(p.pending) > 0 {
		pg := p.pending[0]
		if pg.broken {
			p.blocked = true
			break
		}
		if !pg.sealed || pg.outstanding > 0 {
			break
		}
		p.pending = p.pending[1:]
		p.done.add(pg.counts)
		last = pg
	}
	if last == nil || p.report == nil || last.next.end() {
		return nil
	}
	p.found++
	return &found{seq: p.found, next: last.next, done: p.done}
}

// deliver reports f (nil: nothing) unless a later position was reported already. Called without mu.
func (p *pager) deliver(f *found) {
	if f == nil {
		return
	}
	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	if f.seq <= p.reported {
		return
	}
	p.reported = f.seq
	p.report(f.next, f.done)
}

// endOfRun is the position after the last page of the last scope: it is not reported (the run is
// complete).
var endOfRun = Position{Resource: "\x00end"}

func (p Position) end() bool { return p == endOfRun }
