package reencrypt

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/rekey-dev/rekey/shared/pace"
)

// Outcome is what happened to one object.
type Outcome string

const (
	// Rewritten means the object was written again (its resourceVersion changed).
	Rewritten Outcome = "rewritten"
	// Current means the API server had nothing to rewrite: the object was already stored under the
	// current key.
	Current Outcome = "current"
	// Deleted means the object was deleted before it could be patched.
	Deleted Outcome = "deleted"
	// Failed means the object could not be processed; see Failure.
	Failed Outcome = "failed"
	// NotAttempted means the object was listed but the run stopped (ctx ended, a deadline, a
	// permission error) before it reached an outcome. A later run finishes it.
	NotAttempted Outcome = "notAttempted"
	// Listed is the outcome of every object in a dry run.
	Listed Outcome = "listed"
)

// Counts are per-outcome object counts.
type Counts struct {
	Listed    int64 `json:"listed"`
	Rewritten int64 `json:"rewritten"`
	Current   int64 `json:"current"`
	Deleted   int64 `json:"deleted"`
	Failed    int64 `json:"failed"`
	// NotAttempted counts objects listed but left without an outcome when the run stopped.
	NotAttempted int64 `json:"notAttempted"`
}

// Done is the number of objects that reached an outcome: rewritten, current, deleted or failed.
// After a run that was not a dry run, Listed == Done() + NotAttempted.
func (c Counts) Done() int64 { return c.Rewritten + c.Current + c.Deleted + c.Failed }

func (c *Counts) add(o Counts) {
	c.Listed += o.Listed
	c.Rewritten += o.Rewritten
	c.Current += o.Current
	c.Deleted += o.Deleted
	c.Failed += o.Failed
	c.NotAttempted += o.NotAttempted
}

// ResourceSummary is the outcome of one resource type.
type ResourceSummary struct {
	// Resource is the resource as named by the user, e.g. "secrets" or "deployments.apps".
	Resource string `json:"resource"`
	Counts
}

// Failure names one object that ended Failed and why. It never carries object data.
type Failure struct {
	Resource  string `json:"resource"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
}

// Summary is the result of one run. It is JSON-serialisable.
type Summary struct {
	Strategy Strategy `json:"strategy"`
	DryRun   bool     `json:"dryRun"`
	// Complete is true when every target was listed to the end and every listed object reached an
	// outcome; false when the run stopped early (see StopReason and Counts.NotAttempted).
	Complete bool `json:"complete"`
	// StopReason says why an incomplete run stopped.
	StopReason string            `json:"stopReason,omitempty"`
	Resources  []ResourceSummary `json:"resources"`
	Total      Counts            `json:"total"`
	// Retries counts retried API calls (throttling, server errors, timeouts) and conflict re-reads.
	Retries int64 `json:"retries"`
	// Conflicts counts 409 responses (a concurrent writer changed the object first).
	Conflicts        int64     `json:"conflicts"`
	StartedAt        time.Time `json:"startedAt"`
	DurationSeconds  float64   `json:"durationSeconds"`
	ObjectsPerSecond float64   `json:"objectsPerSecond"`
	// Failures lists failed objects, at most Options.MaxFailures of them.
	Failures []Failure `json:"failures,omitempty"`
	// FailuresOmitted counts failed objects not listed in Failures.
	FailuresOmitted int64 `json:"failuresOmitted,omitempty"`
	// Panics counts panics recovered during the run: each failed its object (reason "panic: ...")
	// or, in the lister or a callback, stopped the run.
	Panics int64 `json:"panics,omitempty"`
	// Pace describes the adaptive concurrency limiter (Options.Pace) at the end of the run; nil
	// when the run was not paced (--max-speed, dry runs).
	Pace *PaceSummary `json:"pace,omitempty"`
	// Routes counts the outcomes per route (Options.Routes), in their order; nil without routes.
	// Listed counts the objects handed to the route.
	Routes []RouteSummary `json:"routes,omitempty"`
}

// PaceSummary is what the adaptive limiter did during a run: why a default run went at the speed
// it did.
type PaceSummary struct {
	// Mode says how the limiter was set up and why (package job: "apf" with rekey's FlowSchema in
	// charge, "bounded" without, with the reason).
	Mode string `json:"mode,omitempty"`
	// Limit is the patches allowed in flight at the end; Peak the most it allowed; Max its bound
	// (Options.Concurrency).
	Limit int `json:"limit"`
	Peak  int `json:"peak"`
	Max   int `json:"max"`
	// BaselineMs is the unloaded patch latency it measured, in milliseconds (0: not measured).
	BaselineMs float64 `json:"baselineMs"`
	// BaselineLimit is the concurrency the baseline was measured at.
	BaselineLimit int `json:"baselineLimit"`
	// Increases and Decreases count its changes of the limit; Throttled the 429s and server
	// timeouts returned to rekey, TooManyRequests the 429s client-go retried on its own (APF's
	// queues full), Failed the server errors.
	Increases       int64 `json:"increases"`
	Decreases       int64 `json:"decreases"`
	Throttled       int64 `json:"throttled"`
	TooManyRequests int64 `json:"tooManyRequests"`
	Failed          int64 `json:"failed"`
}

// paceSummary summarizes l (nil for no limiter).
func paceSummary(l *pace.Limiter, maxInFlight int) *PaceSummary {
	if l == nil {
		return nil
	}
	st := l.Stats()
	return &PaceSummary{Mode: st.Mode, Limit: st.Limit, Peak: st.Peak, Max: maxInFlight, BaselineMs: float64(st.Baseline) / float64(time.Millisecond),
		BaselineLimit: st.BaselineLimit, Increases: st.Increases, Decreases: st.Decreases, Throttled: st.Throttled,
		TooManyRequests: st.Throttles, Failed: st.Failed}
}

// OK reports whether the run was complete and every object ended rewritten, current or deleted.
func (s Summary) OK() bool {
	return s.Complete && s.Total.Failed == 0 && s.Total.NotAttempted == 0
}

// tally collects counts from concurrent workers.
type tally struct {
	listed, rewritten, current, deleted, failed, notAttempted atomic.Int64
}

func (t *tally) record(o Outcome) {
	switch o {
	case Rewritten:
		t.rewritten.Add(1)
	case Current:
		t.current.Add(1)
	case Deleted:
		t.deleted.Add(1)
	case Failed:
		t.failed.Add(1)
	case NotAttempted:
		t.notAttempted.Add(1)
	}
}

func (t *tally) counts() Counts {
	return Counts{Listed: t.listed.Load(), Rewritten: t.rewritten.Load(), Current: t.current.Load(), Deleted: t.deleted.Load(), Failed: t.failed.Load(),
		NotAttempted: t.notAttempted.Load()}
}

// failureLog keeps the first max failures.
type failureLog struct {
	mu      sync.Mutex
	max     int
	list    []Failure
	omitted int64
}

func (f *failureLog) add(x Failure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.list) < f.max {
		f.list = append(f.list, x)
		return
	}
	f.omitted++
}

// finish fills the derived fields of s.
func (s *Summary) finish(end time.Time) {
	s.Total = Counts{}
	for _, r := range s.Resources {
		s.Total.add(r.Counts)
	}
	d := end.Sub(s.StartedAt)
	s.DurationSeconds = d.Seconds()
	if d > 0 {
		n := s.Total.Done()
		if s.DryRun {
			n = s.Total.Listed
		}
		s.ObjectsPerSecond = float64(n) / d.Seconds()
	}
}
