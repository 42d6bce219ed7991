package adoption

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/apimetrics"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Kind names a kind of evidence, or a mode of the gate.
type Kind string

// The kinds of evidence, best first, and the gate's two other modes.
const (
	// Auto uses the best kind available: Etcd, then Metrics, then Canary, then Settle.
	Auto Kind = "auto"
	// Etcd writes a canary through the API server and reads its stored key ID from etcd.
	Etcd Kind = "etcd"
	// Metrics reads the KMS v2 key-ID-hash series of /metrics.
	Metrics Kind = "metrics"
	// Canary uses effect-based canaries: no-op patches of Secrets recorded under a known version.
	Canary Kind = "canary"
	// Settle waits a fixed time after the rotation.
	Settle Kind = "settle"
	// Off does not gate.
	Off Kind = "off"
)

// ParseKind parses a mode name: auto, etcd, metrics, canary, settle or off.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(strings.TrimSpace(s))); k {
	case "":
		return Auto, nil
	case Auto, Etcd, Metrics, Canary, Settle, Off:
		return k, nil
	}
	return "", fmt.Errorf("unknown adoption evidence %q: want auto, etcd, metrics, canary, settle or off", s)
}

// Names and defaults of the gate.
const (
	// DefaultNamespace holds the gate's canaries (created by infra/rbac/rekey.yaml).
	DefaultNamespace = "rekey-system"
	// CanaryLabel is set on every object the gate creates; its value is EtcdCanary, EffectCanary or
	// LedgerCanary.
	CanaryLabel = "rekey.io/canary"
	// EtcdCanary, EffectCanary and LedgerCanary are the values of CanaryLabel.
	EtcdCanary, EffectCanary, LedgerCanary = "etcd", "effect", "ledger"
	// EtcdCanaryName is the Secret the Etcd kind writes.
	EtcdCanaryName = "rekey-canary-etcd"
	// LedgerName is the Secret whose annotations hold the resourceVersion of each effect canary
	// when its version was recorded.
	LedgerName = "rekey-canary-ledger"
	// EffectCanaryPrefix starts the names of the effect canaries: rekey-canary-0, rekey-canary-1, ...
	EffectCanaryPrefix = "rekey-canary-"
	// ProvedVersionAnnotation is the key version an effect canary is stored under.
	ProvedVersionAnnotation = "rekey.io/proved-key-version"
	// ProvedByAnnotation is the kind of evidence that established that version.
	ProvedByAnnotation = "rekey.io/proved-by"
	// ProvedAtAnnotation is when it was recorded (RFC 3339).
	ProvedAtAnnotation = "rekey.io/proved-at"
	// ProbeAnnotation changes on every Etcd canary write.
	ProbeAnnotation = "rekey.io/probe"
	// LedgerAnnotationPrefix + canary name holds that canary's recorded resourceVersion on the ledger.
	LedgerAnnotationPrefix = "rekey.io/rv."
	// KeyIDHashAnnotation, on the ledger, is the KMS key-ID hash (as /metrics labels it) the API
	// servers used for the version the canaries were proved under ("" when not seen).
	KeyIDHashAnnotation = "rekey.io/key-id-hash"

	// DefaultSettle is upstream's 3 + N + M minutes with N = 1 (the Status poll) and M = 5.
	DefaultSettle = 9 * time.Minute
	// DefaultTimeout bounds Wait.
	DefaultTimeout = 15 * time.Minute
	// DefaultConfirmations is how many consecutive confirming samples prove adoption.
	DefaultConfirmations = 5
	// DefaultCanaries is how many effect canaries the gate keeps.
	DefaultCanaries = 3
	// DefaultSampleInterval separates confirming samples.
	DefaultSampleInterval = 200 * time.Millisecond
	// DefaultMaxBackoff caps the wait after a sample that does not confirm.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultMetricsGiveUp is how long the Metrics kind waits for a sign of adoption in the series.
	DefaultMetricsGiveUp = 2 * time.Minute
	// DefaultCallTimeout bounds each API server, etcd or /metrics call.
	DefaultCallTimeout = 15 * time.Second
	// DefaultFieldManager is the field manager of the gate's writes.
	DefaultFieldManager = "rekey"
)

// SecretsAPI is the part of a typed Secrets client (k8s.io/client-go corev1.SecretInterface) the
// gate uses, for the canaries in its namespace.
type SecretsAPI interface {
	Create(ctx context.Context, secret *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*corev1.Secret, error)
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.SecretList, error)
}

// EtcdGetter reads etcd keys; clientv3.KV (and *clientv3.Client) implement it.
type EtcdGetter interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
}

// MetricsScraper reads the KMS v2 key-ID series of one API server; apimetrics.Scraper implements it.
type MetricsScraper interface {
	Scrape(ctx context.Context) (apimetrics.Snapshot, error)
}

var _ MetricsScraper = apimetrics.Scraper{}

// Gate configures Wait. Secrets, Etcd and Metrics are the evidence sources; a nil source makes its
// kind unavailable. The zero values of the other fields mean their defaults. A Gate is not
// modified by Wait, so one may be used concurrently.
type Gate struct {
	// Mode is the kind of evidence to use, Auto (default) or Off.
	Mode Kind
	// Namespace holds the canaries (default DefaultNamespace); it must exist.
	Namespace string
	// Secrets is a Secrets client of Namespace (the Etcd and Canary kinds, and recording).
	Secrets SecretsAPI
	// Etcd reads the cluster's etcd (the Etcd kind).
	Etcd EtcdGetter
	// EtcdPrefix is the API server's --etcd-prefix (default "/registry").
	EtcdPrefix string
	// Metrics scrapes /metrics (the Metrics kind).
	Metrics MetricsScraper
	// Provider, when set, is the KMS v2 provider name whose metrics count.
	Provider string
	// Nudge, when set, is called after a sample that does not confirm adoption, to make the API
	// servers poll their KMS plugin sooner (ReadyzNudge). Its error is only logged.
	Nudge func(ctx context.Context) error
	// Predecessor is the version that was primary just before the one Wait is given ("" unknown:
	// effect canaries then prove only a re-run, whose canaries are recorded under the primary).
	Predecessor string
	// RotatedAt is when the primary version was created (zero: unknown; Settle counts from the
	// start of Wait).
	RotatedAt time.Time
	// Baseline says no rotation was observed (the first job of a cluster): the primary may have
	// been in use for long, so no replica will be seen moving; the Metrics kind proves only by
	// equality with sha256(primary), and gives way at once otherwise.
	Baseline bool
	// PreviousKeyIDHash is the KMS key-ID hash (as /metrics labels it) the API servers used for
	// the previous key version. Default: the one the gate recorded on the ledger when it proved
	// Predecessor. With a KMS plugin whose key_id is not the version ID, a move away from it is the
	// metrics evidence.
	PreviousKeyIDHash string
	// MetricsGiveUp bounds how long the Metrics kind waits for any sign in the series (a replica
	// on sha256(primary), or moving to a new key ID) before it gives way to the next kind, when
	// PreviousKeyIDHash is not known (default DefaultMetricsGiveUp).
	MetricsGiveUp time.Duration
	// Settle is the delay of the Settle kind (default DefaultSettle).
	Settle time.Duration
	// Timeout bounds Wait (default DefaultTimeout).
	Timeout time.Duration
	// Confirmations is the number of consecutive confirming samples (default DefaultConfirmations).
	Confirmations int
	// Canaries is the number of effect canaries (default DefaultCanaries).
	Canaries int
	// SampleInterval separates confirming samples (default DefaultSampleInterval).
	SampleInterval time.Duration
	// MaxBackoff caps the wait after a sample that does not confirm (default DefaultMaxBackoff).
	MaxBackoff time.Duration
	// CallTimeout bounds each remote call (default DefaultCallTimeout).
	CallTimeout time.Duration
	// FieldManager names the gate's writes (default DefaultFieldManager).
	FieldManager string
	// Clock is the time source (default the real clock).
	Clock clock.WithTicker
	// Log receives progress at debug and info level (default none).
	Log *zerolog.Logger
}

func (g Gate) withDefaults() Gate {
	if g.Mode == "" {
		g.Mode = Auto
	}
	if g.Namespace == "" {
		g.Namespace = DefaultNamespace
	}
	if g.EtcdPrefix == "" {
		g.EtcdPrefix = "/registry"
	}
	if g.Settle <= 0 {
		g.Settle = DefaultSettle
	}
	if g.Timeout <= 0 {
		g.Timeout = DefaultTimeout
	}
	if g.Confirmations <= 0 {
		g.Confirmations = DefaultConfirmations
	}
	if g.Canaries <= 0 {
		g.Canaries = DefaultCanaries
	}
	if g.SampleInterval <= 0 {
		g.SampleInterval = DefaultSampleInterval
	}
	if g.MaxBackoff <= 0 {
		g.MaxBackoff = DefaultMaxBackoff
	}
	if g.CallTimeout <= 0 {
		g.CallTimeout = DefaultCallTimeout
	}
	if g.MetricsGiveUp <= 0 {
		g.MetricsGiveUp = DefaultMetricsGiveUp
	}
	if g.FieldManager == "" {
		g.FieldManager = DefaultFieldManager
	}
	if g.Clock == nil {
		g.Clock = clock.RealClock{}
	}
	if g.Log == nil {
		nop := zerolog.Nop()
		g.Log = &nop
	}
	return g
}

// Attempt is a kind of evidence the gate could not use, and why.
type Attempt struct {
	Kind   Kind   `json:"kind"`
	Reason string `json:"reason"`
}

// Evidence says how adoption of a key version was established. It is JSON-serialisable.
type Evidence struct {
	// Kind is the evidence that established adoption (Off when the gate was disabled).
	Kind Kind `json:"kind"`
	// Version is the key version adopted.
	Version string `json:"version"`
	// Confirmations is the number of consecutive confirming samples.
	Confirmations int `json:"confirmations,omitempty"`
	// Samples is the number of samples taken (writes, scrapes or patches).
	Samples int `json:"samples,omitempty"`
	// Replicas is the number of API servers seen (Metrics).
	Replicas int `json:"replicas,omitempty"`
	// KeyIDHash is the KMS key-ID hash every API server was seen on once the version was adopted
	// ("" when /metrics could not tell): recorded on the ledger, it is what the next rotation's
	// Metrics evidence sees the replicas move away from.
	KeyIDHash string `json:"keyIdHash,omitempty"`
	// Changes counts canary patches that changed the canary (Canary).
	Changes int `json:"changes,omitempty"`
	// Direct is true when the evidence shows the API servers writing KMS v2 values under Version
	// (etcd, metrics, or canaries that observed a key change or were recorded after such evidence),
	// false after a settle delay, which only makes adoption likely.
	Direct bool `json:"direct"`
	// WaitedSeconds is how long Wait took.
	WaitedSeconds float64 `json:"waitedSeconds"`
	// Detail says what was observed, in one sentence.
	Detail string `json:"detail"`
	// Tried lists the better kinds that could not be used, and why.
	Tried []Attempt `json:"tried,omitempty"`
	// Recorded is the number of effect canaries recorded under Version for the next rotation.
	Recorded int `json:"recorded"`
	// Notes are warnings (for example why nothing could be recorded).
	Notes []string `json:"notes,omitempty"`
}

// String describes the evidence in one line.
func (e Evidence) String() string {
	if e.Kind == Off {
		return "adoption gate off: no evidence that the API servers encrypt with key version " + e.Version
	}
	s := fmt.Sprintf("key version %s adopted (evidence: %s, %.1fs): %s", e.Version, e.Kind, e.WaitedSeconds, e.Detail)
	for _, a := range e.Tried {
		s += fmt.Sprintf("; %s unavailable: %s", a.Kind, a.Reason)
	}
	return s
}

// NotAdoptedError reports that the gate could not establish adoption before its timeout (or that
// the chosen kind of evidence is unavailable).
type NotAdoptedError struct {
	// Version is the key version that was to be adopted.
	Version string
	// Kind is the kind of evidence that was being gathered ("" when none was available).
	Kind Kind
	// Waited is how long the gate waited.
	Waited time.Duration
	// Last is the last observation that did not confirm adoption.
	Last string
	// Tried lists the kinds that could not be used.
	Tried []Attempt
	// Err is the underlying cause (context errors, an unavailable chosen kind), if any.
	Err error
}

// Error implements error.
func (e *NotAdoptedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the API servers did not adopt key version %s", e.Version)
	if e.Kind != "" {
		fmt.Fprintf(&b, " (evidence: %s) within %s", e.Kind, e.Waited.Round(time.Second))
	}
	if e.Last != "" {
		fmt.Fprintf(&b, ": last: %s", e.Last)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	for _, a := range e.Tried {
		fmt.Fprintf(&b, "; %s unavailable: %s", a.Kind, a.Reason)
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *NotAdoptedError) Unwrap() error { return e.Err }

// errUnavailable marks a kind that cannot be used on this cluster.
type unavailableError struct{ reason string }

func (e *unavailableError) Error() string { return e.reason }

func unavailable(format string, a ...any) error {
	return &unavailableError{reason: fmt.Sprintf(format, a...)}
}

// errTimeout ends a poll at the gate's deadline.
var errTimeout = errors.New("timed out")

// Wait blocks until the API servers are shown to encrypt with primary (the key's primary version
// as DescribeKey reports it, which is the KMS v2 key ID rekey's plugin returns), by the best
// evidence Mode allows, and records the result on the effect canaries. It returns a
// *NotAdoptedError when the timeout passes first or the chosen kind is unavailable.
func (g Gate) Wait(ctx context.Context, primary string) (Evidence, error) {
	g = g.withDefaults()
	if primary == "" {
		return Evidence{}, errors.New("adoption gate: no primary key version")
	}
	if g.Mode == Off {
		return Evidence{Kind: Off, Version: primary}, nil
	}
	r := &run{g: g, primary: primary, start: g.Clock.Now(), prevHash: g.PreviousKeyIDHash}
	r.deadline = r.start.Add(g.Timeout)
	r.recordedHashes(ctx)
	kinds := []Kind{Etcd, Metrics, Canary, Settle}
	if g.Mode != Auto {
		kinds = []Kind{g.Mode}
	}
	for _, k := range kinds {
		ev, err := r.try(ctx, k)
		var ue *unavailableError
		if errors.As(err, &ue) {
			g.Log.Info().Str("evidence", string(k)).Str("reason", ue.reason).Msg("adoption evidence unavailable")
			r.tried = append(r.tried, Attempt{Kind: k, Reason: ue.reason})
			continue
		}
		if err != nil {
			return Evidence{}, r.fail(k, err)
		}
		ev.Kind, ev.Version, ev.Tried = k, primary, r.tried
		if ev.KeyIDHash == "" {
			// After direct evidence, or a settle delay long enough for every replica's Status
			// poll, the hash the replicas all report is the primary's.
			ev.KeyIDHash = r.learnKeyIDHash(ctx)
		}
		g.Log.Info().Str("evidence", string(k)).Int("samples", ev.Samples).Msg("key version adopted; recording it on the canaries")
		if err := r.record(ctx, &ev); err != nil {
			return Evidence{}, r.fail(k, err)
		}
		ev.WaitedSeconds = g.Clock.Since(r.start).Seconds()
		return ev, nil
	}
	return Evidence{}, &NotAdoptedError{Version: primary, Tried: r.tried, Waited: g.Clock.Since(r.start),
		Err: errors.New("no kind of evidence is available")}
}

func (r *run) try(ctx context.Context, k Kind) (Evidence, error) {
	switch k {
	case Etcd:
		return r.etcd(ctx)
	case Metrics:
		return r.metrics(ctx)
	case Canary:
		return r.canary(ctx)
	case Settle:
		return r.settle(ctx)
	}
	return Evidence{}, fmt.Errorf("adoption gate: unknown kind %q", k)
}

func (r *run) fail(k Kind, err error) error {
	var na *NotAdoptedError
	if errors.As(err, &na) {
		return err
	}
	e := &NotAdoptedError{Version: r.primary, Kind: k, Waited: r.g.Clock.Since(r.start), Last: r.last, Tried: r.tried}
	if !errors.Is(err, errTimeout) {
		e.Err = err
	}
	return e
}

// maxEncryptionFaults is how many samples in a row may fail with an encryption-at-rest fault
// before the gate stops.
const maxEncryptionFaults = 3

func faultsInARow(n int, err error) int {
	if retry.EncryptionFault(err) {
		return n + 1
	}
	return 0
}

// KMSFaultError stops the gate: the API server answers that it cannot encrypt or decrypt stored
// objects (KMS unreachable, the key disabled or deleted, or the KMS plugin down), so no key
// version can be adopted until KMS works again.
type KMSFaultError struct {
	// Err is the API server's last answer.
	Err error
}

// Error implements error.
func (e *KMSFaultError) Error() string {
	return "the API server cannot encrypt or decrypt with its KMS provider (KMS unreachable, the key disabled or deleted, " +
		"or the KMS plugin down): fix KMS access, then run again: " + e.Err.Error()
}

// Unwrap returns the API server's answer.
func (e *KMSFaultError) Unwrap() error { return e.Err }

// run is the state of one Wait.
type run struct {
	g               Gate
	primary         string
	start, deadline time.Time
	tried           []Attempt
	last            string // the last observation that did not confirm adoption
	// prevHash and primaryHash are the KMS key-ID hashes known for the predecessor and for the
	// primary (Gate.PreviousKeyIDHash, or recorded on the ledger), "" when not known.
	prevHash, primaryHash string
}

// call derives a per-call context.
func (r *run) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.g.CallTimeout)
}

// sampler takes one sample: confirmed says it supports adoption, done that the evidence is
// complete. An error is a failed sample (retried until the deadline) unless it is an
// *unavailableError, which ends the kind.
type sampler func(ctx context.Context) (confirmed, done bool, err error)

// poll calls sample until it is done or the deadline passes: SampleInterval after a confirming
// sample, an exponential backoff (and a nudge) after one that is not.
func (r *run) poll(ctx context.Context, sample sampler) error {
	backoff := r.g.SampleInterval
	faults := 0
	for {
		confirmed, done, err := sample(ctx)
		if done {
			return nil
		}
		var ue *unavailableError
		if errors.As(err, &ue) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.last = err.Error()
		}
		// An API server that cannot encrypt will not adopt anything by waiting: stop and name KMS
		// instead of polling until the timeout.
		if faults = faultsInARow(faults, err); faults >= maxEncryptionFaults {
			return &KMSFaultError{Err: err}
		}
		wait := r.g.SampleInterval
		if !confirmed {
			r.nudge(ctx)
			wait, backoff = backoff, min(backoff*2, r.g.MaxBackoff)
		} else {
			backoff = r.g.SampleInterval
		}
		if err := r.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// sleep waits d on the gate's clock, or until the deadline (errTimeout) or ctx is done.
func (r *run) sleep(ctx context.Context, d time.Duration) error {
	left := r.deadline.Sub(r.g.Clock.Now())
	if left <= 0 {
		return errTimeout
	}
	last := d >= left
	d = min(d, left)
	t := r.g.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
	}
	if last {
		return errTimeout
	}
	return nil
}

func (r *run) nudge(ctx context.Context) {
	if r.g.Nudge == nil {
		return
	}
	cctx, cancel := r.call(ctx)
	defer cancel()
	if err := r.g.Nudge(cctx); err != nil {
		r.g.Log.Debug().Err(err).Msg("nudge the API servers")
	}
}

// settle waits until Settle has passed since the rotation (or since Wait started).
func (r *run) settle(ctx context.Context) (Evidence, error) {
	from, what := r.start, "the gate started"
	if !r.g.RotatedAt.IsZero() && !r.g.RotatedAt.After(r.start) {
		from, what = r.g.RotatedAt, "the rotation"
	}
	until := from.Add(r.g.Settle)
	if until.After(r.deadline) {
		return Evidence{}, fmt.Errorf("the settle delay (%s after %s) ends after the timeout (%s): raise the timeout or lower the settle delay", r.g.Settle, what, r.g.Timeout)
	}
	r.last = fmt.Sprintf("waiting %s after %s", r.g.Settle, what)
	if d := until.Sub(r.g.Clock.Now()); d > 0 {
		if err := r.sleep(ctx, d); err != nil && !errors.Is(err, errTimeout) {
			return Evidence{}, err
		}
	}
	return Evidence{Detail: fmt.Sprintf("waited %s after %s (no direct evidence available)", r.g.Settle, what)}, nil
}
