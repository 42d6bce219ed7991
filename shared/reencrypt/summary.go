package reencrypt

import (
	"sync"
	"sync/atomic"
	"time"
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
}

// Done is the number of objects that reached an outcome (all but Listed).
func (c Counts) Done() int64 { return c.Rewritten + c.Current + c.Deleted + c.Failed }

func (c *Counts) add(o Counts) {
	c.Listed += o.Listed
	c.Rewritten += o.Rewritten
	c.Current += o.Current
	c.Deleted += o.Deleted
	c.Failed += o.Failed
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
	Strategy  Strategy          `json:"strategy"`
	DryRun    bool              `json:"dryRun"`
	Resources []ResourceSummary `json:"resources"`
	Total     Counts            `json:"total"`
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
}

// OK reports whether every object ended rewritten, current or deleted.
func (s Summary) OK() bool { return s.Total.Failed == 0 }

// tally collects counts from concurrent workers.
type tally struct {
	listed, rewritten, current, deleted, failed atomic.Int64
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
	}
}

func (t *tally) counts() Counts {
	return Counts{Listed: t.listed.Load(), Rewritten: t.rewritten.Load(), Current: t.current.Load(), Deleted: t.deleted.Load(), Failed: t.failed.Load()}
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
