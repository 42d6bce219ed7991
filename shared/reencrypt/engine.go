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

	"github.com/rekey-dev/rekey/shared/retry"
)

// Defaults for Options fields left zero.
const (
	DefaultConcurrency     = 32
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
}

// run is the state of one Run.
type run struct {
	*Engine
	ctx       context.Context
	fail      context.CancelCauseFunc
	retries   atomic.Int64
	conflicts atomic.Int64
	failures  *failureLog
	rotation  time.Time
	access    accessCache
}

// Run processes every target in turn and returns the summary. The error is non-nil when the run
// could not finish (a permission is missing, listing failed for good, ctx ended); the summary then
// holds what was done so far, is not Complete, and counts the objects listed but left without an
// outcome as NotAttempted. Objects that failed individually are counted, not returned as error.
func (e *Engine) Run(ctx context.Context) (Summary, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := e.opts.Clock.Now()
	r := &run{Engine: e, ctx: ctx, fail: cancel, failures: &failureLog{max: e.opts.MaxFailures}, rotation: start}
	s := Summary{Strategy: e.opts.Strategy, DryRun: e.opts.DryRun, StartedAt: start}
	var err error
	for _, t := range e.opts.Targets {
		var rs ResourceSummary
		rs, err = r.target(t)
		s.Resources = append(s.Resources, rs)
		if err != nil {
			break
		}
	}
	s.Complete = err == nil
	if err != nil {
		s.StopReason = err.Error()
	}
	s.Retries, s.Conflicts = r.retries.Load(), r.conflicts.Load()
	s.Failures, s.FailuresOmitted = r.failures.list, r.failures.omitted
	s.finish(e.opts.Clock.Now())
	e.log.Info().Str("strategy", string(s.Strategy)).Bool("dryRun", s.DryRun).Bool("complete", s.Complete).Int64("listed", s.Total.Listed).
		Int64("rewritten", s.Total.Rewritten).Int64("current", s.Total.Current).Int64("deleted", s.Total.Deleted).
		Int64("failed", s.Total.Failed).Int64("notAttempted", s.Total.NotAttempted).Int64("retries", s.Retries).
		Float64("seconds", s.DurationSeconds).Msg("run finished")
	return s, err
}

// target processes one resource type: a lister feeding a bounded channel read by N workers.
func (r *run) target(t Target) (ResourceSummary, error) {
	var tl tally
	items := make(chan item, 2*r.opts.Concurrency)
	var wg sync.WaitGroup
	for range r.opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range items {
				o := r.process(t, it)
				tl.record(o)
				if r.opts.OnObject != nil {
					r.opts.OnObject(t.Name, o)
				}
			}
		}()
	}
	listErr := r.list(t, items, &tl)
	close(items)
	wg.Wait()
	rs := ResourceSummary{Resource: t.Name, Counts: tl.counts()}
	if listErr != nil {
		return rs, listErr
	}
	// The run's context ended: this target is incomplete if an object was left without an
	// outcome, or if a worker stopped the run (a missing permission). A context that ended
	// after the last object reached its outcome took nothing away.
	var pe *PermissionError
	if cause := context.Cause(r.ctx); cause != nil && (rs.NotAttempted > 0 || errors.As(cause, &pe)) {
		return rs, cause
	}
	return rs, nil
}

// list pages through the target's objects and sends them to items.
func (r *run) list(t Target, items chan<- item, tl *tally) error {
	scopes := r.opts.Namespaces
	if len(scopes) == 0 {
		scopes = []string{metav1.NamespaceAll}
	}
	excluded := make(map[string]bool, len(r.opts.ExcludeNamespaces))
	var notIn []fields.Selector
	for _, ns := range r.opts.ExcludeNamespaces {
		excluded[ns] = true
		notIn = append(notIn, fields.OneTermNotEqualSelector("metadata.namespace", ns))
	}
	for _, ns := range scopes {
		if excluded[ns] {
			continue
		}
		opts := metav1.ListOptions{Limit: r.opts.PageSize, LabelSelector: r.opts.LabelSelector}
		if ns == metav1.NamespaceAll && len(notIn) > 0 {
			opts.FieldSelector = fields.AndSelectors(notIn...).String()
		}
		if err := r.listScope(t, ns, opts, items, tl); err != nil {
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
func (r *run) listScope(t Target, ns string, opts metav1.ListOptions, items chan<- item, tl *tally) error {
	api := r.client.Resource(t.GVR).Namespace(ns)
	var last, skipTo string // last key handed on; after a restart from the top, skip up to this key
	restarts, pages := 0, 0
	for {
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
				if r.opts.OnObject != nil {
					r.opts.OnObject(t.Name, Listed)
				}
				continue
			}
			select {
			case items <- item{namespace: m.Namespace, name: m.Name, resourceVersion: m.ResourceVersion}:
			case <-r.ctx.Done():
				// This object and the rest of the page were listed and will never be patched.
				rest := int64(len(page.Items) - i - 1)
				tl.listed.Add(rest)
				tl.notAttempted.Add(rest + 1)
				return context.Cause(r.ctx)
			}
		}
		if page.Continue == "" {
			return nil
		}
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
	if r.ctx.Err() != nil {
		return NotAttempted
	}
	api := r.client.Resource(t.GVR).Namespace(it.namespace)
	rv := it.resourceVersion
	mayHaveApplied := false
	for round := 0; ; round++ {
		body, err := patchBody(r.opts.Strategy, rv, r.rotation)
		if err != nil {
			return r.failed(t, it, err)
		}
		var out *metav1.PartialObjectMetadata
		err = retry.Do(r.ctx, r.opts.Retry, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, r.opts.CallTimeout)
			defer cancel()
			var err error
			out, err = api.Patch(ctx, it.name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: r.opts.FieldManager})
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
			return Deleted
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
				if r.ctx.Err() != nil {
					return NotAttempted
				}
				return r.failed(t, it, fmt.Errorf("re-read after conflict: %w", gerr))
			}
		default:
			if r.ctx.Err() != nil {
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
		m, err = r.client.Resource(t.GVR).Namespace(it.namespace).Get(ctx, it.name, metav1.GetOptions{})
		return err
	}, r.notifyRetry("get", t.Name, it.namespace, it.name))
	if err != nil {
		return "", err
	}
	return m.ResourceVersion, nil
}

func (r *run) failed(t Target, it item, err error) Outcome {
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
