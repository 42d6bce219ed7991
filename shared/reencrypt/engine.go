package reencrypt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/pace"
	"github.com/rekey-dev/rekey/shared/panics"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Defaults for Options fields left zero.
const (
	DefaultConcurrency     = 64
	DefaultPageSize        = 500
	DefaultConflictRetries = 5
	DefaultCallTimeout     = 30 * time.Second
	DefaultMaxFailures     = 100
	DefaultFieldManager    = "rekey"
	maxListRestarts        = 5
)

// Target is one namespaced resource type to re-encrypt.
type Target struct {
	// Name is the resource as the user named it ("secrets", "deployments.apps"), used in summaries.
	Name string
	// GVR is the resolved group, version and resource.
	GVR schema.GroupVersionResource
}

// Options configure an Engine. Only Targets is required.
type Options struct {
	// Targets are the resource types to process, in order.
	Targets []Target
	// Strategy must be Rewrite or Annotate (resolve Auto first with Strategy.Resolve).
	Strategy Strategy
	// Namespaces limits the run to these namespaces; empty means all namespaces.
	Namespaces []string
	// ExcludeNamespaces are skipped (filtered by the server with a field selector).
	ExcludeNamespaces []string
	// LabelSelector limits the objects processed.
	LabelSelector string
	// Concurrency is the number of patch workers (default DefaultConcurrency).
	Concurrency int
	// Pace, when set, admits each patch call: it bounds the patches in flight below Concurrency
	// and adapts the bound to the server's latency and 429s (package pace). nil: every worker
	// patches at once (rekey's --max-speed).
	Pace *pace.Limiter
	// PageSize is the list page size (default DefaultPageSize).
	PageSize int64
	// DryRun lists and counts objects without patching any.
	DryRun bool
	// Retry bounds the retries of each API call (default retry.DefaultPolicy).
	Retry retry.Policy
	// ConflictRetries bounds the re-read-and-retry rounds after 409 Conflict for one object.
	ConflictRetries int
	// CallTimeout bounds one API call (default DefaultCallTimeout).
	CallTimeout time.Duration
	// FieldManager names rekey in managedFields (default DefaultFieldManager).
	FieldManager string
	// MaxFailures bounds the failed objects named in the Summary (default DefaultMaxFailures).
	MaxFailures int
	// Clock tells the time for the summary and the Annotate timestamp (default clock.RealClock).
	Clock clock.PassiveClock
	// AccessCheck, when set, is asked after a patch is answered 403 whether the identity may patch
	// the resource in that namespace (a SelfSubjectAccessReview: see [SelfSubjectAccessReview]).
	// Allowed means authorization passed and an admission webhook or policy denied this one object:
	// the object fails with the server's message and the run goes on. Not allowed stops the run
	// with a *PermissionError. Answers are cached per verb, resource and namespace for one Run.
	// Without it (or when it errors) the server's message decides: the authorizer's "cannot
	// <verb> resource" stops the run, an admission denial fails the object.
	AccessCheck AccessCheck
	// Logger receives structured events naming objects by namespace/name only (default: disabled).
	Logger *zerolog.Logger
	// OnListed is called once per listed scope (a namespace, or all of them) with the server's
	// estimate of the objects in it, -1 when unknown. It is called from the listing goroutine.
	OnListed func(target string, estimate int64)
	// OnObject is called after each object reaches an outcome. It is called concurrently from the
	// workers and must be safe for concurrent use.
	OnObject func(target string, o Outcome)

	// Resume, when set, starts the run at a Position a previous run reported to OnPage: targets
	// before Resume.Resource and scopes before Resume.Namespace are skipped, the list starts from
	// Resume.Continue and skips the objects up to Resume.After. An expired continue token restarts
	// that scope's list from the top, still skipping up to After (rewriting is idempotent). A
	// position that names no target or scope of these options starts the run from the beginning.
	Resume *Position
	// OnPage is called each time the run can resume later than before: every object listed up to
	// the Position it is given reached an outcome. Positions move object by object inside a page
	// (Position.After), so a run that stops in the middle of a page still saves its progress.
	// done counts the objects up to the position in this run (not those of a resumed run's
	// predecessors). Calls come in list order, never concurrently, from the listing goroutine or
	// a worker; a worker that finds a position while a call is under way does not wait for it:
	// the goroutine making the call reports the newest position when it returns, so intermediate
	// positions may be skipped but the last one found is always reported before Run returns. Keep
	// it short (rate-bound any I/O). It is not called after the last page of the run: the run is
	// then Complete.
	OnPage func(next Position, done Counts)
	// Routes, when set, spread the patches over several connections: the k-th object the run lists
	// is patched (and re-read) through Routes[k % len(Routes)], so that each route gets its share
	// whatever the worker timing. Lists always go through the Engine's client. Summary.Routes
	// counts the outcomes per route.
	Routes []Route
	// StopMargin, when positive and the run's context has a deadline, makes the run stop taking
	// work StopMargin before the deadline: the lister hands on no more objects and workers start no
	// new one, patches in flight finish, and Run returns an error wrapping ErrStopped.
	StopMargin time.Duration
}

// Engine re-encrypts objects through the API server. Run may be called more than once, not
// concurrently.
type Engine struct {
	client metadata.Interface
	opts   Options
	log    zerolog.Logger
}

// New validates opts and returns an Engine that talks to the cluster through client.
func New(client metadata.Interface, opts Options) (*Engine, error) {
	if client == nil {
		return nil, errors.New("new engine: metadata client is nil")
	}
	if len(opts.Targets) == 0 {
		return nil, errors.New("new engine: no resources to process")
	}
	if opts.Strategy != Rewrite && opts.Strategy != Annotate {
		return nil, fmt.Errorf("new engine: strategy %q must be %q or %q (resolve %q first)", opts.Strategy, Rewrite, Annotate, Auto)
	}
	if opts.Concurrency < 0 || opts.PageSize < 0 || opts.ConflictRetries < 0 || opts.MaxFailures < 0 {
		return nil, errors.New("new engine: concurrency, page size, conflict retries and max failures must not be negative")
	}
	for i, rt := range opts.Routes {
		if rt.Client == nil {
			return nil, fmt.Errorf("new engine: route %d (%q) has no client", i, rt.Name)
		}
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.PageSize == 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.ConflictRetries == 0 {
		opts.ConflictRetries = DefaultConflictRetries
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.FieldManager == "" {
		opts.FieldManager = DefaultFieldManager
	}
	if opts.MaxFailures == 0 {
		opts.MaxFailures = DefaultMaxFailures
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	return &Engine{client: client, opts: opts, log: log}, nil
}

// PermissionError reports that the caller's identity lacks a permission rekey needs. It stops a run
// at once: the same would hold for every other object.
type PermissionError struct {
	// Verb and Resource name the missing permission ("patch", "secrets").
	Verb, Resource string
	// Namespace is where it was denied ("" for all namespaces).
	Namespace string
	// Err is the API server's answer.
	Err error
}

// Error implements error.
func (e *PermissionError) Error() string {
	where := "across all namespaces"
	if e.Namespace != "" {
		where = fmt.Sprintf("in namespace %q", e.Namespace)
	}
	return fmt.Sprintf("permission denied: rekey needs %q on %q %s (grant it with RBAC): %v", e.Verb, e.Resource, where, e.Err)
}

// Unwrap returns the API server's error.
func (e *PermissionError) Unwrap() error { return e.Err }

// item is what the lister hands to the workers: never more than an object's identity.
type item struct {
	namespace, name, resourceVersion string
	page                             *page
	index                            int    // in page
	seq                              uint64 // in the run, from 0: picks the route
}

// run is the state of one Run.
type run struct {
	*Engine
	ctx       context.Context
	fail      context.CancelCauseFunc
	stop      context.Context // ends StopMargin before ctx's deadline (and with ctx): take no new work
	pager     *pager
	scopes    []string
	retries   atomic.Int64
	conflicts atomic.Int64
	failures  *failureLog
	rotation  time.Time
	access    accessCache
	breaker   breaker      // stops the run when objects keep failing after their retries (breaker.go)
	panics    atomic.Int64 // panics recovered (panics.go)
	seq       uint64       // objects handed on so far (the lister's only)
	routes    routeTally
}

// Run processes every target in turn and returns the summary. The error is non-nil when the run
// could not finish (a permission is missing, listing failed for good, ctx ended); the summary then
// holds what was done so far, is not Complete, and counts the objects listed but left without an
// outcome as NotAttempted. Objects that failed individually are counted, not returned as error.
func (e *Engine) Run(ctx context.Context) (Summary, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop, stopCancel := e.stopContext(ctx)
	defer stopCancel()
	start := e.opts.Clock.Now()
	r := &run{Engine: e, ctx: ctx, fail: cancel, stop: stop, scopes: e.scopes(),
		failures: &failureLog{max: e.opts.MaxFailures}, rotation: start}
	r.pager = &pager{report: r.onPage()}
	r.routes.counts = make([]Counts, len(e.opts.Routes))
	s := Summary{Strategy: e.opts.Strategy, DryRun: e.opts.DryRun, StartedAt: start}
	ti, si, from := r.resumeAt()
	var err error
	for i, t := range e.opts.Targets {
		if i < ti {
			continue
		}
		var rs ResourceSummary
		rs, err = r.target(i, t, si, from)
		si, from = 0, Position{}
		s.Resources = append(s.Resources, rs)
		if err != nil {
			break
		}
	}
	err = explainKMS(err)
	s.Complete = err == nil
	if err != nil {
		s.StopReason = err.Error()
	}
	s.Retries, s.Conflicts, s.Panics = r.retries.Load(), r.conflicts.Load(), r.panics.Load()
	s.Routes = r.routes.summaries(e.opts.Routes)
	s.Failures, s.FailuresOmitted = r.failures.list, r.failures.omitted
	s.Pace = paceSummary(e.opts.Pace, e.opts.Concurrency)
	s.finish(e.opts.Clock.Now())
	e.log.Info().Str("strategy", string(s.Strategy)).Bool("dryRun", s.DryRun).Bool("complete", s.Complete).Int64("listed", s.Total.Listed).
		Int64("rewritten", s.Total.Rewritten).Int64("current", s.Total.Current).Int64("deleted", s.Total.Deleted).
		Int64("failed", s.Total.Failed).Int64("notAttempted", s.Total.NotAttempted).Int64("retries", s.Retries).
		Float64("seconds", s.DurationSeconds).Msg("run finished")
	return s, err
}

// stopContext returns the context that ends when the run must stop taking work: StopMargin before
// ctx's deadline, or with ctx.
func (e *Engine) stopContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && e.opts.StopMargin > 0 {
		return context.WithDeadlineCause(ctx, dl.Add(-e.opts.StopMargin), fmt.Errorf("%w (%s before it)", ErrStopped, e.opts.StopMargin))
	}
	return context.WithCancel(ctx)
}

// scopes returns the namespaces each target is listed in, in order: the Namespaces option less the
// excluded ones, or all namespaces ("").
func (e *Engine) scopes() []string {
	if len(e.opts.Namespaces) == 0 {
		return []string{metav1.NamespaceAll}
	}
	excluded := make(map[string]bool, len(e.opts.ExcludeNamespaces))
	for _, ns := range e.opts.ExcludeNamespaces {
		excluded[ns] = true
	}
	var out []string
	for _, ns := range e.opts.Namespaces {
		if !excluded[ns] {
			out = append(out, ns)
		}
	}
	return out
}

// resumeAt turns Options.Resume into the target and scope indexes to start from, and the position
// in that scope (its continue token and skip key).
func (r *run) resumeAt() (target, scope int, from Position) {
	p := r.opts.Resume
	if p == nil || p.IsStart() {
		return 0, 0, Position{}
	}
	for ti, t := range r.opts.Targets {
		if t.Name != p.Resource {
			continue
		}
		for si, ns := range r.scopes {
			if ns == p.Namespace {
				return ti, si, *p
			}
		}
	}
	r.log.Warn().Str("resource", p.Resource).Str("namespace", p.Namespace).Msg("resume position names no target or scope of this run; starting from the beginning")
	return 0, 0, Position{}
}

// next returns the position after the last page of scope si of target ti.
func (r *run) next(ti, si int) Position {
	if si+1 < len(r.scopes) {
		return Position{Resource: r.opts.Targets[ti].Name, Namespace: r.scopes[si+1]}
	}
	if ti+1 < len(r.opts.Targets) {
		return Position{Resource: r.opts.Targets[ti+1].Name, Namespace: r.scopes[0]}
	}
	return endOfRun
}

// target processes one resource type: a lister feeding a bounded channel read by N workers. It
// starts at scope index si, from the continue token and skip key of from.
func (r *run) target(ti int, t Target, si int, from Position) (ResourceSummary, error) {
	var tl tally
	items := make(chan item, 2*r.opts.Concurrency)
	var wg sync.WaitGroup
	for range r.opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range items {
				r.handle(t, it, &tl)
			}
		}()
	}
	listErr := r.listContained(ti, t, si, from, items, &tl)
	close(items)
	wg.Wait()
	rs := ResourceSummary{Resource: t.Name, Counts: tl.counts()}
	if listErr != nil {
		return rs, listErr
	}
	// The run's context ended: this target is incomplete if an object was left without an
	// outcome, or if a worker stopped the run (a missing permission). A context that ended
	// after the last object reached its outcome took nothing away; a callback that panicked
	// (panics.go) stops the run whenever it happened.
	var pe *PermissionError
	var pan *panics.Error
	if cause := context.Cause(r.stop); cause != nil && (rs.NotAttempted > 0 || errors.As(cause, &pe) || errors.As(cause, &pan)) {
		return rs, cause
	}
	return rs, nil
}

// list pages through the target's objects, from scope index first at the continue token and skip
// key of from, and sends them to items.
func (r *run) list(ti int, t Target, first int, from Position, items chan<- item, tl *tally) error {
	var notIn []fields.Selector
	for _, ns := range r.opts.ExcludeNamespaces {
		notIn = append(notIn, fields.OneTermNotEqualSelector("metadata.namespace", ns))
	}
	for si := first; si < len(r.scopes); si++ {
		ns := r.scopes[si]
		opts := metav1.ListOptions{Limit: r.opts.PageSize, LabelSelector: r.opts.LabelSelector, Continue: from.Continue}
		after := from.After
		from = Position{}
		if ns == metav1.NamespaceAll && len(notIn) > 0 {
			opts.FieldSelector = fields.AndSelectors(notIn...).String()
		}
		if err := r.listScope(ti, si, t, ns, opts, after, items, tl); err != nil {
			return err
		}
	}
	return nil
}

// listScope lists one namespace (or all) page by page.
//
// A continue token dies with etcd's compaction (every 5 minutes by default), so a long scope can
// lose it at every page. The server then offers a token that continues after the last key without
// a consistent snapshot, and rekey takes it; the restart cap (maxListRestarts) counts expiries in a
// row without progress, and resets after every page that handed on a new object. When the server
// offers no such token the list starts again from the top, and the objects already handed on are
// skipped: list results come in storage-key order (etcd3 and the watch cache both return a
// resource's objects sorted by namespace/name), so remembering the last key handed on is enough,
// whatever the size of the scope.
//
// Each object is reported to the pager: once it and every object listed before it reached an
// outcome, a later run may resume after it (Options.OnPage): at the next page's token once its
// page is done, or at its own page's token skipping up to its key. opts.Continue and after, when
// set, are a resumed run's token and skip key; when the token has expired and the server offers no
// other, the scope is listed from the top, skipping up to after.
func (r *run) listScope(ti, si int, t Target, ns string, opts metav1.ListOptions, after string, items chan<- item, tl *tally) error {
	api := r.client.Resource(t.GVR).Namespace(ns)
	// last is the last key handed on (or skipped as done by a resumed run); skipTo: skip the
	// objects up to this key (a resumed position, or after a restart from the top).
	last, skipTo := after, after
	restarts, pages := 0, 0
	for {
		if r.stop.Err() != nil {
			return context.Cause(r.stop)
		}
		var page *metav1.PartialObjectMetadataList
		err := retry.Do(r.ctx, r.opts.Retry, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, r.opts.CallTimeout)
			defer cancel()
			var err error
			page, err = api.List(ctx, opts)
			return err
		}, r.notifyRetry("list", t.Name, ns, ""))
		if err != nil && apierrors.IsResourceExpired(err) && restarts < maxListRestarts {
			restarts++
			opts.Continue = inconsistentContinue(err)
			if opts.Continue == "" {
				skipTo = last
			}
			r.log.Warn().Str("resource", t.Name).Str("namespace", ns).Bool("fromTop", opts.Continue == "").
				Int("restart", restarts).Msg("list continue token expired; continuing")
			continue
		}
		if err != nil {
			// A run stopped by a worker (e.g. a patch denied) reports why it stopped, not the
			// list call it cut short.
			if cause := context.Cause(r.ctx); cause != nil {
				return cause
			}
			if retry.Classify(err) == retry.Denied {
				return &PermissionError{Verb: "list", Resource: t.Name, Namespace: ns, Err: err}
			}
			return fmt.Errorf("list %s in %s: %w", t.Name, scopeName(ns), err)
		}
		if pages == 0 {
			est := int64(-1)
			if rem := page.RemainingItemCount; rem != nil {
				est = int64(len(page.Items)) + *rem
			} else if page.Continue == "" {
				est = int64(len(page.Items))
			}
			if r.opts.OnListed != nil {
				r.opts.OnListed(t.Name, est)
			}
		}
		pages++
		pg := r.pager.open(Position{Resource: t.Name, Namespace: ns, Continue: opts.Continue, After: skipTo})
		for i := range page.Items {
			m := &page.Items[i]
			key := m.Namespace + "/" + m.Name
			if skipTo != "" {
				if key <= skipTo {
					continue // handed on before the restart
				}
				skipTo = ""
			}
			if last != "" && key <= last {
				r.log.Warn().Str("resource", t.Name).Str("namespace", m.Namespace).Str("name", m.Name).
					Msg("list returned an object out of key order; a restart from the top may count it twice")
			}
			last, restarts = key, 0
			tl.listed.Add(1)
			if r.opts.DryRun {
				r.pager.handOn(pg, key, false)
				if r.opts.OnObject != nil {
					r.opts.OnObject(t.Name, Listed)
				}
				continue
			}
			if r.stop.Err() == nil {
				idx := r.pager.handOn(pg, key, true)
				select {
				case items <- item{namespace: m.Namespace, name: m.Name, resourceVersion: m.ResourceVersion, page: pg, index: idx, seq: r.seq}:
					r.seq++
					continue
				case <-r.stop.Done():
					r.pager.finish(pg, idx, NotAttempted)
				}
			}
			// This object and the rest of the page were listed and will never be patched; the page
			// is never sealed, so no position after this object is reported.
			rest := int64(len(page.Items) - i - 1)
			tl.listed.Add(rest)
			tl.notAttempted.Add(rest + 1)
			return context.Cause(r.stop)
		}
		if page.Continue == "" {
			r.pager.seal(pg, r.next(ti, si))
			return nil
		}
		r.pager.seal(pg, Position{Resource: t.Name, Namespace: ns, Continue: page.Continue})
		opts.Continue = page.Continue
	}
}

func inconsistentContinue(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().ListMeta.Continue
	}
	return ""
}

func scopeName(ns string) string {
	if ns == "" {
		return "all namespaces"
	}
	return "namespace " + ns
}

// process brings one object to an outcome.
//
// Rewritten is counted when the object was stored again during this run: the patch answered with
// a new resourceVersion, or an earlier attempt whose answer was lost (a reset connection, a
// timeout, a 5xx) may have been applied and the object's resourceVersion is no longer the listed
// one. In that second case the write was rekey's or a concurrent writer's; the two cannot be told
// apart, and either stored the object under the current key. A definite 409 (nothing of ours was
// applied) followed by a no-op patch is Current, as before.
func (r *run) process(t Target, it item) Outcome {
	if r.stop.Err() != nil {
		return NotAttempted
	}
	client, _ := r.route(it.seq)
	api := client.Resource(t.GVR).Namespace(it.namespace)
	rv := it.resourceVersion
	mayHaveApplied, notFoundRetried := false, false
	for round := 0; ; round++ {
		body, err := patchBody(r.opts.Strategy, rv, r.rotation)
		if err != nil {
			return r.failed(t, it, err)
		}
		var out *metav1.PartialObjectMetadata
		err = retry.Do(r.ctx, r.opts.Retry, func(ctx context.Context) error {
			permit, err := r.opts.Pace.Acquire(ctx)
			if err != nil {
				return err
			}
			outcome := pace.Lost // if the call panics
			defer func() { permit.Release(outcome) }()
			ctx, cancel := context.WithTimeout(ctx, r.opts.CallTimeout)
			defer cancel()
			out, err = api.Patch(ctx, it.name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: r.opts.FieldManager})
			outcome = pace.OutcomeOf(err)
			if unanswered(err) {
				mayHaveApplied = true
			}
			return err
		}, r.notifyRetry("patch", t.Name, it.namespace, it.name))
		switch retry.Classify(err) {
		case retry.OK:
			o := Current
			if out.ResourceVersion != rv || (mayHaveApplied && out.ResourceVersion != it.resourceVersion) {
				o = Rewritten
			}
			r.log.Debug().Str("resource", t.Name).Str("namespace", it.namespace).Str("name", it.name).Str("outcome", string(o)).Msg("object processed")
			return o
		case retry.NotFound:
			// Deleted only when a fresh read agrees (notfound.go).
			fresh, again := r.notFound(t, it, err, notFoundRetried)
			if !again {
				return fresh.outcome
			}
			rv, notFoundRetried = fresh.rv, true
			continue
		case retry.Denied:
			return r.denied(t, it, "patch", err)
		case retry.Conflict:
			r.conflicts.Add(1)
			if round >= r.opts.ConflictRetries {
				return r.failed(t, it, fmt.Errorf("still conflicting after %d re-reads: %w", round, err))
			}
			fresh, gerr := r.reread(t, it)
			switch retry.Classify(gerr) {
			case retry.OK:
				rv = fresh
				r.retries.Add(1)
				continue
			case retry.NotFound:
				return Deleted
			case retry.Denied:
				r.fail(&PermissionError{Verb: "get", Resource: t.Name, Namespace: it.namespace, Err: gerr})
				return r.failed(t, it, fmt.Errorf("re-read after conflict: %w", gerr))
			default:
				if r.gaveUp(gerr) { // deadline.go
					return NotAttempted
				}
				return r.failed(t, it, fmt.Errorf("re-read after conflict: %w", gerr))
			}
		default:
			if r.gaveUp(err) { // deadline.go
				return NotAttempted
			}
			return r.failed(t, it, err)
		}
	}
}

// unanswered reports whether a failed patch may still have been applied: its answer was lost or
// was an error the server can return after writing (timeouts, 5xx). A 429 is refused before the
// request is handled.
func unanswered(err error) bool {
	return retry.Classify(err) == retry.Retriable && !apierrors.IsTooManyRequests(err)
}

// denied handles a 401/403 answer to a patch. An authorization denial stops the run with a
// *PermissionError; a denial by an admission webhook or policy (authorization passed) fails this
// object only, with the server's message.
func (r *run) denied(t Target, it item, verb string, err error) Outcome {
	if !apierrors.IsUnauthorized(err) && r.admissionDenied(t, verb, it.namespace, err) {
		return r.failed(t, it, fmt.Errorf("%s denied by admission: %w", verb, err))
	}
	pe := &PermissionError{Verb: verb, Resource: t.Name, Namespace: it.namespace, Err: err}
	r.fail(pe)
	return r.failed(t, it, pe)
}

// admissionDenied tells an admission denial from an authorization one: by asking AccessCheck when
// it is set, else (or when it fails) from the message.
func (r *run) admissionDenied(t Target, verb, ns string, err error) bool {
	if r.opts.AccessCheck != nil {
		allowed, cerr := r.access.check(r.ctx, r.opts.AccessCheck, r.opts.CallTimeout, verb, t.GVR, ns)
		if cerr == nil {
			return allowed
		}
		r.log.Warn().Str("verb", verb).Str("resource", t.Name).Str("namespace", ns).Err(cerr).
			Msg("access check after a denial failed; deciding from the server's message")
	}
	return admissionMessage(verb, err)
}

// admissionMessage reads a 403: the authorizer always says `cannot <verb> resource`; admission
// denials name the object (`... is forbidden: ...`) or the webhook or policy that denied it. A
// message that is neither is treated as an authorization denial, which stops the run.
func admissionMessage(verb string, err error) bool {
	msg := err.Error()
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		msg = s.Status().Message
	}
	if strings.Contains(msg, "cannot "+verb+" resource") {
		return false
	}
	for _, m := range []string{"admission webhook", "denied request", "denied the request", " is forbidden: "} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// reread fetches the object's current resourceVersion after a conflict.
func (r *run) reread(t Target, it item) (string, error) {
	var m *metav1.PartialObjectMetadata
	err := retry.Do(r.ctx, r.opts.Retry, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, r.opts.CallTimeout)
		defer cancel()
		var err error
		client, _ := r.route(it.seq)
		m, err = client.Resource(t.GVR).Namespace(it.namespace).Get(ctx, it.name, metav1.GetOptions{})
		return err
	}, r.notifyRetry("get", t.Name, it.namespace, it.name))
	if err != nil {
		return "", err
	}
	return m.ResourceVersion, nil
}

func (r *run) failed(t Target, it item, err error) Outcome {
	if outage := r.breaker.failed(err); outage != nil {
		r.fail(outage)
	}
	reason := err.Error()
	r.failures.add(Failure{Resource: t.Name, Namespace: it.namespace, Name: it.name, Reason: reason})
	r.log.Warn().Str("resource", t.Name).Str("namespace", it.namespace).Str("name", it.name).Str("reason", reason).Msg("object failed")
	return Failed
}

func (r *run) notifyRetry(verb, resource, ns, name string) retry.Notify {
	return func(err error, wait time.Duration) {
		r.retries.Add(1)
		r.log.Debug().Str("verb", verb).Str("resource", resource).Str("namespace", ns).Str("name", name).
			Dur("wait", wait).Str("class", retry.Classify(err).String()).Msg("retrying API call")
	}
}
