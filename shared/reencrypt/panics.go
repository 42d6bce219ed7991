package reencrypt

import (
	"github.com/rekey-dev/rekey/shared/panics"
)

// A panic in a goroutine takes the whole process down (a Function Compute instance with it, and
// every cluster its invocation was working on). The engine's goroutines contain theirs:
//
//   - a panic while processing one object (rekey's code, the client, an AccessCheck) fails that
//     object with the reason "panic: ..." and the run goes on;
//   - a panic in the lister stops the run: Run returns the *panics.Error, the summary is not
//     Complete and the objects listed but not reached are NotAttempted;
//   - a panic in one of the caller's callbacks (OnPage, OnObject) stops the run the same way:
//     a broken OnPage means positions are no longer saved.
//
// Summary.Panics counts them; each is logged with its stack.

// handle brings one object to an outcome and reports it.
func (r *run) handle(t Target, it item, tl *tally) {
	o := r.processContained(t, it)
	if o != Failed && o != NotAttempted {
		r.breaker.succeeded()
	}
	tl.record(o)
	if _, i := r.route(it.seq); i >= 0 {
		r.routes.record(i, o)
	}
	r.pager.finish(it.page, it.index, o)
	if r.opts.OnObject != nil {
		r.callback("OnObject", func() { r.opts.OnObject(t.Name, o) })
	}
}

// processContained is process, with a panic failing the object.
func (r *run) processContained(t Target, it item) (o Outcome) {
	defer panics.Recover("processing "+t.Name+" "+it.namespace+"/"+it.name, func(e *panics.Error) {
		r.panicked(e)
		o = r.failed(t, it, e)
	})
	return r.process(t, it)
}

// listContained is list, with a panic stopping the run.
func (r *run) listContained(ti int, t Target, si int, from Position, items chan<- item, tl *tally) (err error) {
	defer panics.Recover("listing "+t.Name, func(e *panics.Error) {
		r.panicked(e)
		r.fail(e)
		err = e
	})
	return r.list(ti, t, si, from, items, tl)
}

// onPage returns the pager's report: Options.OnPage, with a panic stopping the run. The pager
// calls it while it is marked reporting, so the panic must not leave it.
func (r *run) onPage() func(Position, Counts) {
	if r.opts.OnPage == nil {
		return nil
	}
	return func(p Position, c Counts) {
		r.callback("OnPage", func() { r.opts.OnPage(p, c) })
	}
}

// callback calls one of the caller's callbacks; a panic in it stops the run.
func (r *run) callback(name string, f func()) {
	defer panics.Recover(name+" callback", func(e *panics.Error) {
		r.panicked(e)
		r.fail(e)
	})
	f()
}

// panicked counts and logs a recovered panic.
func (r *run) panicked(e *panics.Error) {
	r.panics.Add(1)
	r.log.Error().Str("where", e.Where).Str("panic", e.Value).Str("stack", string(e.Stack)).Msg("recovered from a panic")
}
