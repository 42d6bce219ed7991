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
// start of that scope), skipping the objects up to and including After. Every object listed before
// it reached an outcome. The zero Position is the start of the run.
//
// Positions move object by object, not page by page: After is the storage key (namespace/name) of
// the last object of a page up to which every object reached an outcome, so a run stopped in the
// middle of a page (a deadline, a slow API server) saves everything it did, and the next run lists
// that page again and skips what is done. List results come in storage-key order (etcd3 and the
// watch cache sort a resource's objects by namespace/name), which makes the key a safe bookmark.
type Position struct {
	Resource  string `json:"resource,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Continue  string `json:"continue,omitempty"`
	After     string `json:"after,omitempty"`
}

// IsStart reports whether p is the start of a run.
func (p Position) IsStart() bool { return p == Position{} }

// Plus returns c with o's counts added.
func (c Counts) Plus(o Counts) Counts {
	c.add(o)
	return c
}

// count adds one object with outcome o (Listed only in a dry run).
func (c *Counts) count(o Outcome) {
	c.Listed++
	switch o {
	case Rewritten:
		c.Rewritten++
	case Current:
		c.Current++
	case Deleted:
		c.Deleted++
	case Failed:
		c.Failed++
	case NotAttempted:
		c.NotAttempted++
	}
}

// page is one listed page: its objects are handed to the workers in list order, and a run may
// resume after the longest prefix of them that reached an outcome (or at next once all did).
type page struct {
	start    Position  // where the page was listed from (After: the skip key in effect)
	keys     []string  // the objects handed on, in list order
	outcomes []Outcome // their outcomes ("" = none yet)
	head     int       // the objects at the start with an outcome, counted in pager.done
	sealed   bool      // the lister handed on the whole page
	next     Position
}

// pager reports, in list order, the positions up to which every listed object reached an outcome
// (Options.OnPage). Objects finish out of order (workers run concurrently); a position is reported
// only when every object before it is done. An object left NotAttempted blocks every later
// position in this run.
type pager struct {
	mu      sync.Mutex
	pending []*page
	blocked bool // an object was left NotAttempted: no later position is safe in this run
	done    Counts
	found   uint64 // positions found so far, numbered in list order
	report  func(Position, Counts)

	// The report is called outside mu, and never waited for: a worker that finds a position while
	// another goroutine is reporting leaves it in newest, and the reporting goroutine reports the
	// newest position before it returns. So a slow report (a checkpoint write) holds up only the
	// goroutine making it, calls come one at a time and in list order, and the last position found
	// is always reported.
	reportMu  sync.Mutex
	reporting bool
	newest    *found
	reported  uint64
}

// found is a position to report: the seq-th found, with the counts done up to it.
type found struct {
	seq  uint64
	next Position
	done Counts
}

// open starts a page listed from start.
func (p *pager) open(start Position) *page {
	pg := &page{start: start}
	p.mu.Lock()
	p.pending = append(p.pending, pg)
	p.mu.Unlock()
	return pg
}

// handOn records an object of pg with key namespace/name handed to the workers, or, in a dry run
// (toWorkers false), listed and done. It returns the object's index in the page.
func (p *pager) handOn(pg *page, key string, toWorkers bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	pg.keys = append(pg.keys, key)
	o := Outcome("")
	if !toWorkers {
		o = Listed
	}
	pg.outcomes = append(pg.outcomes, o)
	return len(pg.keys) - 1
}

// finish records the outcome of object i of pg.
func (p *pager) finish(pg *page, i int, o Outcome) {
	p.mu.Lock()
	pg.outcomes[i] = o
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

// advance moves past the objects with an outcome at the head of the pending pages and returns the
// position after the last of them to report (nil for none). Called with mu held.
func (p *pager) advance() *found {
	var at *Position
	for !p.blocked && len(p.pending) > 0 {
		pg := p.pending[0]
		moved := false
		for pg.head < len(pg.outcomes) && pg.outcomes[pg.head] != "" {
			o := pg.outcomes[pg.head]
			if o == NotAttempted {
				p.blocked = true
				break
			}
			p.done.count(o)
			pg.head++
			moved = true
		}
		if p.blocked || !pg.sealed || pg.head < len(pg.outcomes) {
			if moved {
				in := pg.start
				in.After = pg.keys[pg.head-1]
				at = &in
			}
			break
		}
		p.pending = p.pending[1:]
		at = &pg.next
	}
	if at == nil || p.report == nil || at.end() {
		return nil
	}
	p.found++
	return &found{seq: p.found, next: *at, done: p.done}
}

// deliver reports f (nil: nothing) unless a later position was reported already; when another
// goroutine is reporting, it leaves f to it. Called without mu.
func (p *pager) deliver(f *found) {
	if f == nil {
		return
	}
	p.reportMu.Lock()
	if p.newest == nil || f.seq > p.newest.seq {
		p.newest = f
	}
	if p.reporting {
		p.reportMu.Unlock()
		return
	}
	p.reporting = true
	for p.newest != nil && p.newest.seq > p.reported {
		next := p.newest
		p.reported = next.seq
		p.reportMu.Unlock()
		p.report(next.next, next.done)
		p.reportMu.Lock()
	}
	p.reporting = false
	p.reportMu.Unlock()
}

// endOfRun is the position after the last page of the last scope: it is not reported (the run is
// complete).
var endOfRun = Position{Resource: "\x00end"}

func (p Position) end() bool { return p == endOfRun }
