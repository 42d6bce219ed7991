package job

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/discovery"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/apf"
	"github.com/rekey-dev/rekey/shared/cluster"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/pace"
	"github.com/rekey-dev/rekey/shared/panics"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/replicas"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/storagemode"
	"github.com/rekey-dev/rekey/shared/verify"
)

// Defaults for Deps fields left zero.
const (
	// DefaultStopMargin is how long before ctx's deadline a checkpointed job stops taking work
	// (capped at a third of the time left when the job starts).
	DefaultStopMargin = 5 * time.Second
	// DefaultLeaseDuration is how long the cluster's run Lease lasts without renewal: a crashed
	// holder's Lease is taken over after it. The job renews it every third of it.
	DefaultLeaseDuration = 30 * time.Second
	// DefaultCheckpointInterval bounds how often the checkpoint is written while a pass runs.
	DefaultCheckpointInterval = state.DefaultCheckpointInterval
	// flushTimeout bounds the final checkpoint write and the Lease release.
	flushTimeout = 5 * time.Second
	// maxConvergenceRestarts bounds the convergence restarts of one invocation.
	maxConvergenceRestarts = 3
)

// Spec is one rotation job: one cluster, one key.
type Spec struct {
	// Cluster is the cluster ID; it names the state, the Lease and the checkpoint ("" for the CLI).
	Cluster string
	// KeyID is the KMS key (ID, alias or ARN) that encrypts the cluster's Secrets; "" = no KMS
	// guard, no known rotation, no adoption gate (the CLI without --kms-key-id).
	KeyID string
	// Version is the key version the job was created for ("" = the primary at run time). The job
	// always brings the resources to the primary version at run time, which satisfies it.
	Version string
	// Reason says why the job exists (logs, state).
	Reason string
	// Strategy is auto, rewrite or annotate ("" = auto).
	Strategy reencrypt.Strategy
	// Resources are the resources to re-encrypt, "name" or "name.group" (default secrets).
	Resources []string
	// Namespaces limits the job to these namespaces (default all); ExcludeNamespaces are skipped.
	Namespaces, ExcludeNamespaces []string
	// LabelSelector limits the objects processed.
	LabelSelector string
	// Concurrency and PageSize shape the load (defaults: reencrypt's).
	Concurrency int
	PageSize    int64
	// DryRun lists and counts only (no gate, no verifier, never done).
	DryRun bool
	// Force runs even when the KMS guard fails (the CLI's --force), with a warning.
	Force bool
	// SkipVerify ends the job after the pass and its judgement, without the verifier (the CLI's
	// `rekey run` without --verify). Ignored with Deps.State: a checkpointed job always verifies.
	SkipVerify bool
	// Baseline marks the first job of a cluster (nothing verified yet): no rotation was observed
	// since rekey started watching, so a pass that rewrites nothing is not suspicious.
	Baseline bool
	// MaxSpeed patches with all Concurrency workers at once, for maintenance windows (the CLI's
	// --max-speed; the functions in offpeak run mode, which run jobs only inside the window).
	// Otherwise the run is paced: with rekey's FlowSchema in charge (package apf) the API server's
	// own fairness queues rekey's patches and the limiter (package pace) only guards, starting at
	// Concurrency; without it, at most 16 patches in flight, adapted to the server's latency, 429s
	// and errors, and the run says why once.
	MaxSpeed bool
}

// Adoption configures the adoption gate; zero values mean adoption's defaults.
type Adoption struct {
	// Mode is the evidence to use (default adoption.Auto); adoption.Off disables the gate.
	Mode adoption.Kind
	// Settle is the delay after the rotation when no direct evidence is possible.
	Settle time.Duration
	// Timeout bounds the wait (it is also bounded by ctx's deadline less the stop margin).
	Timeout time.Duration
	// Confirmations is the number of consecutive confirming samples.
	Confirmations int
	// NoNudge stops the gate from GETting /readyz between samples.
	NoNudge bool
}

// Deps are how the job reaches the world. Rest is required; the rest is optional.
type Deps struct {
	// Rest reaches the cluster's API server.
	Rest *rest.Config
	// KMS is required when Spec.KeyID is set.
	KMS kms.Client
	// Trail, with KMS and a key, enables the verifier's audit layer; the expected caller is the RAM
	// user AuditUser when given, else the role AuditRole (default verify.DefaultAuditRole).
	Trail                actiontrail.Lookuper
	AuditRole, AuditUser string
	// Etcd, when set, is the cluster's etcd: strategy evidence, the gate's etcd canary, the
	// judgement of a pass that rewrote nothing, and the verifier's storage layer. EtcdPrefix is the
	// API server's --etcd-prefix (default /registry); EtcdEndpoints only name it in reports.
	Etcd          clientv3.KV
	EtcdPrefix    string
	EtcdEndpoints []string
	// State, when set, makes the job checkpointed and resumable under the cluster's run Lease
	// (see the package documentation). nil: one pass, no Lease, no checkpoint (the CLI).
	State *state.Store
	// Holder identifies this invocation as Lease and checkpoint holder (the FC request ID).
	// Required with State.
	Holder string
	// Logger receives structured events (default: none).
	Logger *zerolog.Logger
	// Clock drives the Lease renewal and the adoption gate (default the real clock).
	Clock clock.WithTicker
	// Adoption configures the adoption gate.
	Adoption Adoption
	// StopMargin: the job stops taking work this long before ctx's deadline. Default: with State,
	// DefaultStopMargin capped at a third of the time left; without State, none (the CLI's
	// --timeout cuts the run).
	StopMargin time.Duration
	// LeaseDuration is the run Lease's duration (default DefaultLeaseDuration).
	LeaseDuration time.Duration
	// CheckpointInterval bounds how often the checkpoint is written (default
	// DefaultCheckpointInterval).
	CheckpointInterval time.Duration
	// Say, when set, receives one-line messages for people (warnings, the gate's progress); the
	// CLI prints them to stderr after "rekey: ". Without it they are logged.
	Say func(msg string)
	// OnListed and OnObject are passed to the engine's pass (a progress bar).
	OnListed func(target string, estimate int64)
	OnObject func(target string, o reencrypt.Outcome)
}

// Status is how a job ended this time.
type Status string

// Statuses of an Outcome.
const (
	// StatusDone: a full pass ended with nothing failed, the pass is not suspicious and (unless
	// skipped) the verifier passed. With State the verified version is recorded.
	StatusDone Status = "done"
	// StatusPartial: the job stopped before its deadline (or could not finish a step yet, such as
	// the adoption gate); with State the next invocation resumes from the checkpoint.
	StatusPartial Status = "partial"
	// StatusBusy: another live holder has the cluster's Lease ("already running"), or took it or
	// the checkpoint over during the run.
	StatusBusy Status = "busy"
	// StatusRefused: the KMS guard refused the key; nothing ran.
	StatusRefused Status = "refused"
	// StatusFailed: objects failed, the verifier failed, or a permanent fault (Outcome.Err).
	StatusFailed Status = "failed"
	// StatusSuspicious: the pass rewrote nothing after a known rotation without evidence that the
	// objects are already current (storagemode.Judge).
	StatusSuspicious Status = "suspicious"
)

// Outcome is the result of one Run. It is JSON-serialisable and holds no Secret data.
type Outcome struct {
	Status Status `json:"status"`
	// Reason explains the status in one sentence.
	Reason string `json:"reason,omitempty"`
	// Job is the job's ID (with State: state.JobID of the spec).
	Job string `json:"job,omitempty"`
	// Phase is the phase the job is in at the end of this Run (with State).
	Phase state.Phase `json:"phase,omitempty"`
	// Summary is this Run's engine pass (nil when it ran none), Convergence its convergence pass.
	Summary     *reencrypt.Summary `json:"summary,omitempty"`
	Convergence *reencrypt.Summary `json:"convergence,omitempty"`
	// Adoption is the gate's evidence when the gate ran in this Run.
	Adoption *adoption.Evidence `json:"adoption,omitempty"`
	// Strategy is how the strategy was chosen.
	Strategy *storagemode.Decision `json:"strategy,omitempty"`
	// Verdict is the judgement of the (whole) pass, when it finished.
	Verdict *storagemode.Verdict `json:"verdict,omitempty"`
	// Verify is the verifier's report, when it ran.
	Verify *verify.Report `json:"verify,omitempty"`
	// Checkpoint is where the job stands at the end of this Run (with State; nil once done).
	Checkpoint *state.Checkpoint `json:"checkpoint,omitempty"`
	// Lease describes the Lease's holder when the job is busy.
	Lease *state.LeaseInfo `json:"lease,omitempty"`
	// VerifiedVersion is the key version every object was verified under; set when Status is done
	// and the verifier ran with a key.
	VerifiedVersion string `json:"verifiedVersion,omitempty"`
	// NoProgress, set on a partial outcome with State, says why this Run ran a pass but did not
	// move the checkpoint (the deadline too short for one patch, the API server failing); Stalled
	// counts such Runs in a row for the job, this one included.
	NoProgress string `json:"noProgress,omitempty"`
	Stalled    int    `json:"stalled,omitempty"`
	// Phases say when each phase of the job ran, over all its invocations (with State).
	Phases []PhaseTime `json:"phases,omitempty"`
	// PassTotal is the whole pass's counts over all its invocations, once it finished (with State).
	PassTotal *reencrypt.Counts `json:"passTotal,omitempty"`
	// APF is how the API server's API Priority and Fairness classifies rekey's requests (package
	// apf), probed at connect for every run that writes; nil when not probed.
	APF *apf.Classification `json:"apf,omitempty"`
	// Err is the fault behind a failed or partial outcome, for callers that map it to an exit code
	// (*SpecError, *cluster.AccessError, *reencrypt.PermissionError, the adoption gate's error,
	// reencrypt.ErrStopped, ctx's error).
	Err error `json:"-"`
}

// Phases of a job's timeline (PhaseTime.Name), besides state.PhasePass and state.PhaseConvergence.
const (
	PhaseGate     = "gate"
	PhaseVerifier = "verifier"
)

// PhaseTime is when one phase of a job ran: from its first start to its last end, over every
// invocation (EndedAt zero while it has not ended).
type PhaseTime struct {
	Name      string    `json:"name"`
	StartedAt time.Time `json:"startedAt"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
}

// SpecError reports a job that cannot run as specified (an unknown resource, invalid options): a
// usage error for the CLI, a configuration error for the functions. Retrying does not help.
type SpecError struct{ Err error }

// Error implements error.
func (e *SpecError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *SpecError) Unwrap() error { return e.Err }

func specErrorf(format string, a ...any) error { return &SpecError{fmt.Errorf(format, a...)} }

// Run runs one job for spec through deps: see the package documentation. The error is non-nil only
// for transient or unexpected faults; the Outcome says everything else.
//
// A panic in the job (rekey's code or a dependency's) is recovered: the Outcome is failed with the
// reason "panic: ...", and the error is nil (running the same job again would meet it again).
// Deferred clean-ups (the Lease release) run first; the checkpoint keeps its last saved position.
func Run(ctx context.Context, spec Spec, deps Deps) (out Outcome, err error) {
	r, err := newRunner(spec, deps)
	if err != nil {
		return Outcome{Status: StatusFailed, Reason: err.Error(), Err: err}, nil
	}
	defer panics.Recover("job on cluster "+orNoCluster(spec.Cluster), func(e *panics.Error) {
		r.log.Error().Str("panic", e.Value).Str("stack", string(e.Stack)).Msg("the job panicked; failed")
		out, err = Outcome{Status: StatusFailed, Reason: e.Error(), Err: e}, nil
		if deps.State != nil {
			out.Job = state.JobID(deps.State.Cluster(), spec.KeyID, spec.Version)
		}
	})
	out, err = r.run(ctx)
	if r.probed {
		out.APF = &r.apf
	}
	return out, err
}

func orNoCluster(c string) string {
	if c == "" {
		return "(none)"
	}
	return c
}

// runner is the state of one Run.
type runner struct {
	spec Spec
	deps Deps
	log  zerolog.Logger

	disco   discovery.DiscoveryInterface
	meta    metadata.Interface
	authz   authzclient.AuthorizationV1Interface
	targets []reencrypt.Target
	version string
	primary string // the key's primary version at run time ("" without a key)
	// replicas are the API server replicas found at connect, one connection each: the pass and the
	// convergence pass are spread over them (nil for a dry run, or when none could be opened).
	replicas *replicas.Set
	// signals report the API server's 429s to the limiter of the engine running (package apf);
	// apf is how the server classifies rekey's requests (probed, probed set, at connect of every
	// run that writes).
	signals apf.Signals
	apf     apf.Classification
	probed  bool
}

func newRunner(spec Spec, deps Deps) (*runner, error) {
	if deps.Rest == nil {
		return nil, specErrorf("job: Deps.Rest is required")
	}
	if spec.KeyID != "" && deps.KMS == nil {
		return nil, specErrorf("job: key %s given without a KMS client", spec.KeyID)
	}
	if deps.State != nil && deps.Holder == "" {
		return nil, specErrorf("job: a checkpointed job needs Deps.Holder")
	}
	if deps.State != nil && spec.Cluster != "" && deps.State.Cluster() != spec.Cluster {
		return nil, specErrorf("job: cluster %q with the state of cluster %q", spec.Cluster, deps.State.Cluster())
	}
	if spec.Strategy == "" {
		spec.Strategy = reencrypt.Auto
	}
	if len(spec.Resources) == 0 {
		spec.Resources = []string{"secrets"}
	}
	if deps.Adoption.Mode == "" {
		deps.Adoption.Mode = adoption.Auto
	}
	if _, err := adoption.ParseKind(string(deps.Adoption.Mode)); err != nil {
		return nil, &SpecError{fmt.Errorf("job: adoption: %w", err)}
	}
	if deps.Adoption.Mode == adoption.Etcd && deps.Etcd == nil && spec.KeyID != "" && !spec.DryRun {
		return nil, specErrorf("job: adoption evidence etcd needs etcd access")
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	if deps.LeaseDuration <= 0 {
		deps.LeaseDuration = DefaultLeaseDuration
	}
	if deps.CheckpointInterval <= 0 {
		deps.CheckpointInterval = DefaultCheckpointInterval
	}
	if deps.EtcdPrefix == "" {
		deps.EtcdPrefix = "/registry"
	}
	log := zerolog.Nop()
	if deps.Logger != nil {
		log = *deps.Logger
	}
	if spec.Cluster != "" {
		log = log.With().Str("cluster", spec.Cluster).Logger()
	}
	return &runner{spec: spec, deps: deps, log: log}, nil
}

// say passes a message for people to Deps.Say, or logs it.
func (r *runner) say(warn bool, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if r.deps.Say != nil {
		r.deps.Say(msg)
		return
	}
	if warn {
		r.log.Warn().Msg(msg)
	} else {
		r.log.Info().Msg(msg)
	}
}

// run is Run after validation.
func (r *runner) run(ctx context.Context) (Outcome, error) {
	defer func() {
		if r.replicas != nil {
			r.replicas.Close()
		}
	}()
	if out, refused := r.guard(ctx); refused {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return Outcome{Status: StatusPartial, Reason: "stopped before the job started: " + err.Error(), Err: err}, nil
	}
	if r.deps.State == nil {
		return r.once(ctx)
	}
	return r.checkpointed(ctx)
}

// connect builds the clients, reads the server version, resolves the resources and checks access.
func (r *runner) connect(ctx context.Context) (*Outcome, error) {
	cfg := rest.CopyConfig(r.deps.Rest)
	cfg.Wrap(r.signals.Wrap)
	d, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	r.disco = d
	if r.meta, err = metadata.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	if r.authz, err = authzclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("authorization client: %w", err)
	}
	if r.version, err = cluster.ServerVersion(ctx, d); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	if r.targets, err = cluster.ResolveTargets(d, r.spec.Resources); err != nil {
		return failedOutcome(&SpecError{err}), nil
	}
	if err := cluster.CheckAccess(ctx, r.authz, r.targets, r.spec.Namespaces, cluster.Verbs(r.spec.DryRun)); err != nil {
		var ae *cluster.AccessError
		if errors.As(err, &ae) {
			return failedOutcome(err), nil
		}
		return nil, err
	}
	if !r.spec.DryRun {
		// Behind a load balancer each connection reaches one API server replica: spread the
		// passes over all of them (package replicas), so that every replica judges objects and a
		// replica on another key version shows itself.
		set, err := replicas.Discover(ctx, cfg, replicas.Options{Logger: &r.log, Clock: r.deps.Clock})
		if err != nil {
			r.log.Warn().Err(err).Msg("API server replicas: none could be reached on a connection of its own; one connection for everything")
		} else {
			r.replicas = set
			for _, n := range set.Notes {
				r.say(true, "warning: API server replicas: %s", n)
			}
		}
	}
	if !r.spec.DryRun {
		r.probeAPF(ctx, cfg)
	}
	return nil, nil
}

// Pacing without rekey's FlowSchema: at most fallbackMax patches in flight, starting (and
// measuring the baseline) at fallbackInitial, slowing down past fallbackTolerance x the baseline.
// With it, the API server queues rekey's requests itself: the limiter starts at the full
// concurrency and steps back only on 429s, server errors or latency past apfTolerance x the
// baseline measured there.
const (
	fallbackMax       = 16
	fallbackInitial   = 8
	fallbackTolerance = 2.0
	apfTolerance      = 4.0
)

// probeAPF asks how the API server classifies rekey's requests and, when rekey's FlowSchema is not
// in charge of a paced run, says so once with the bounded concurrency rekey falls back to.
func (r *runner) probeAPF(ctx context.Context, cfg *rest.Config) {
	c, err := apf.Probe(ctx, cfg)
	if err != nil {
		c = apf.Classification{Reason: err.Error()}
	}
	r.apf, r.probed = c, true
	if c.Ours {
		r.log.Info().Str("priorityLevel", c.PriorityLevel).Msg("API Priority and Fairness: rekey's FlowSchema classifies its requests; the API server paces them")
		return
	}
	if r.spec.MaxSpeed {
		r.log.Info().Str("apf", c.Reason).Msg("API Priority and Fairness: rekey's FlowSchema is not in charge (not paced: max speed)")
		return
	}
	r.say(true, "warning: API Priority and Fairness: %s; rekey paces itself instead, at most %d patches in flight (measured), which is slower: see the README, \"Politeness\"",
		c.Reason, min(cmp.Or(r.spec.Concurrency, reencrypt.DefaultConcurrency), fallbackMax))
}

// paceOptions are the limiter's options for a paced run (see fallbackMax and apfTolerance).
func (r *runner) paceOptions() pace.Options {
	n := cmp.Or(r.spec.Concurrency, reencrypt.DefaultConcurrency)
	if r.apf.Ours {
		return pace.Options{Max: n, Initial: n, Tolerance: apfTolerance, Logger: &r.log,
			Mode: "apf: FlowSchema " + apf.FlowSchemaName + " in charge (priority level " + r.apf.PriorityLevel + ")"}
	}
	m := min(n, fallbackMax)
	return pace.Options{Max: m, Initial: min(fallbackInitial, m), Tolerance: fallbackTolerance, Logger: &r.log,
		Mode: "bounded: " + r.apf.Reason}
}

func failedOutcome(err error) *Outcome {
	return &Outcome{Status: StatusFailed, Reason: err.Error(), Err: err}
}

// engine builds an engine over the job's targets and scope.
func (r *runner) engine(strategy reencrypt.Strategy, mutate func(*reencrypt.Options)) (*reencrypt.Engine, error) {
	opts := reencrypt.Options{
		Targets: r.targets, Strategy: strategy, Namespaces: r.spec.Namespaces, ExcludeNamespaces: r.spec.ExcludeNamespaces,
		LabelSelector: r.spec.LabelSelector, Concurrency: r.spec.Concurrency, PageSize: r.spec.PageSize,
		Logger: &r.log, AccessCheck: reencrypt.SelfSubjectAccessReview(r.authz),
	}
	if r.replicas != nil {
		opts.Routes = r.replicas.Routes()
	}
	if !r.spec.MaxSpeed && !r.spec.DryRun {
		lim, err := pace.New(r.paceOptions())
		if err != nil {
			return nil, &SpecError{err}
		}
		opts.Pace = lim
		r.signals.SetSink(lim.Throttle)
	}
	if mutate != nil {
		mutate(&opts)
	}
	e, err := reencrypt.New(r.meta, opts)
	if err != nil {
		return nil, &SpecError{err}
	}
	return e, nil
}
