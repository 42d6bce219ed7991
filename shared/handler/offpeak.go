package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/panics"
	"github.com/rekey-dev/rekey/shared/policy"
)

// OffPeak handles the timer trigger of functions/offpeak. It is safe for concurrent use:
// overlapping ticks work on different clusters (the Lease decides).
type OffPeak struct {
	base
}

// NewOffPeak returns the off-peak handler.
func NewOffPeak(d Deps) (*OffPeak, error) {
	b, err := newBase(d)
	if err != nil {
		return nil, err
	}
	return &OffPeak{base: b}, nil
}

// OffPeakResult is the off-peak function's answer: a summary per key and per cluster.
type OffPeakResult struct {
	RequestID string `json:"requestId,omitempty"`
	// Error is set when the input was not a timer payload (not retried).
	Error string `json:"error,omitempty"`
	// TriggerTime is the tick's time; InWindow whether it fell inside Window. Mode is the timer's:
	// "offpeak" (runs jobs inside the window) or "watch" (every few minutes all day: the checks,
	// and the jobs in immediate run mode).
	TriggerTime time.Time `json:"triggerTime,omitzero"`
	Window      string    `json:"window,omitempty"`
	InWindow    bool      `json:"inWindow"`
	Mode        string    `json:"mode,omitempty"`
	// Keys are the version checks, one per target.
	Keys []KeyCheck `json:"keys,omitempty"`
	// Notices are the notices this tick sent or tried: the keys' state (a key disabled with no
	// event seen, and its recovery), an alias that moved, and notices still pending in the outboxes.
	Notices []string `json:"notices,omitempty"`
	// Clusters are the runs; an unreachable cluster is a run with status "error".
	Clusters []ClusterRun `json:"clusters,omitempty"`
}

// Timer modes (the timer trigger's payload {"mode": ...}).
const (
	ModeOffPeak = "offpeak"
	ModeWatch   = "watch"
)

// KeyCheck is the version check of one target.
type KeyCheck struct {
	Cluster string `json:"cluster"`
	Key     string `json:"key"`
	// State is the key's state; Primary its primary version; Verified the version last verified
	// on the cluster ("" when none yet).
	State    string `json:"state,omitempty"`
	Primary  string `json:"primary,omitempty"`
	Verified string `json:"verified,omitempty"`
	// Result: "current", "job added", "job pending", "key not enabled", "error".
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	// Job is the job added or found pending.
	Job string `json:"job,omitempty"`
	// BehindSeconds is how long the cluster has been behind the primary version: since its first
	// pending job for the key was recorded (0 when current). The log line carries it for the Log
	// Service alert "a rotation not verified within 48 h" (infra/sls).
	BehindSeconds float64 `json:"behindSeconds,omitempty"`
}

// CheckLogFields are the fields of the version check's log line ("version check: <result>"),
// besides level, time, message, function and requestId: infra/sls/index.json indexes them (the alert
// on a rotation not verified within 48 h reads behindSeconds).
var CheckLogFields = []string{"cluster", "key", "primary", "verified", "job", "result", "behindSeconds"}

// Version check results.
const (
	checkCurrent    = "current"
	checkAdded      = "job added"
	checkPending    = "job pending"
	checkNotEnabled = "key not enabled"
	checkError      = "error"
)

// Handle handles one timer tick. Every tick (both timers) checks each watched key (its state, with
// a critical notice when it is not usable whether or not an event arrived, and its primary version
// against the last verified one) and sends the notices still pending in the outboxes. Jobs run on
// the off-peak timer's ticks inside the window, and stop at the earlier of the function's deadline
// margin and the window's end (by the tick's clock); in immediate run mode they run on every tick
// of either timer, at any hour. Faults on one key or cluster do not stop the others: they are
// reported in the result, and the invocation fails at the end when any was transient (a signal for
// monitoring; the next tick is the retry).
func (h *OffPeak) Handle(ctx context.Context, payload []byte) (OffPeakResult, error) {
	ctx, inv := begin(ctx)
	log := h.deps.Logger.With().Str("requestId", inv.RequestID).Str("function", "offpeak").Logger()
	res := OffPeakResult{RequestID: inv.RequestID, Window: h.deps.Config.Window.String()}
	margin := stopMargin(ctx, h.deps.Clock.Now())

	p, err := events.Decode(payload)
	if err == nil && p.Timer == nil {
		err = errors.New("not a timer payload: functions/offpeak handles its timer trigger (EventBridge events belong to functions/rotation)")
	}
	if err != nil {
		res.Error = err.Error()
		log.Error().Err(err).Int("bytes", len(payload)).Msg("unusable input: not retried")
		return res, nil
	}
	res.TriggerTime, res.Mode = p.Timer.TriggerTime, timerMode(*p.Timer)
	res.InWindow = h.deps.Config.Window.Contains(p.Timer.TriggerTime)

	o := h.open(ctx)
	var faults []error
	res.Keys, faults = h.checkVersions(ctx, o)
	for _, k := range res.Keys {
		ev := log.Info()
		if k.Result == checkError || k.Result == checkNotEnabled {
			ev = log.Warn()
		}
		ev.Str("cluster", k.Cluster).Str("key", alicloud.Redact(k.Key)).Str("primary", k.Primary).Str("verified", k.Verified).
			Str("job", k.Job).Str("result", k.Result).Float64("behindSeconds", k.BehindSeconds).Msg("version check: " + k.Result + reasonSuffix(k.Reason))
	}
	res.Notices = append(h.watchKeys(ctx, o, inv.RequestID, &log), h.sweep(ctx, o, inv.RequestID, &log)...)

	immediate := h.deps.Config.RunMode == config.RunImmediate
	if immediate || (res.Mode == ModeOffPeak && res.InWindow) {
		jctx := ctx
		if !immediate {
			// The window is the window: stop at its end (by the tick's clock) if it comes first.
			left := h.deps.Config.Window.Left(p.Timer.TriggerTime)
			var cancel context.CancelFunc
			jctx, cancel = context.WithTimeoutCause(ctx, left, fmt.Errorf("the off-peak window %s ends", h.deps.Config.Window))
			defer cancel()
			jctx = withWindowEnd(jctx, h.deps.Clock.Now().Add(left))
		}
		runs, err := h.runDue(jctx, o, inv.RequestID, margin, &log)
		res.Clusters = runs
		if err != nil {
			faults = append(faults, err)
		}
	}
	for _, id := range sortedKeys(o.failed) {
		res.Clusters = append(res.Clusters, ClusterRun{Cluster: id, Status: clusterError, Reason: o.failed[id].Error()})
		log.Error().Err(o.failed[id]).Str("cluster", id).Msg("cluster not reachable: not checked, no job run")
	}
	faults = append(faults, o.faults()...)
	log.Info().Time("triggerTime", res.TriggerTime).Str("mode", res.Mode).Bool("inWindow", res.InWindow).Int("clusters", len(res.Clusters)).Msg("tick done")
	if err := errors.Join(faults...); err != nil {
		return fail(&log, res, err)
	}
	return res, nil
}

// timerMode reads a timer's mode from its payload ({"mode":"watch"}); anything else is the off-peak
// timer.
func timerMode(t events.Timer) string {
	var p struct {
		Mode string `json:"mode"`
	}
	if json.Unmarshal([]byte(t.Payload), &p) == nil && p.Mode == ModeWatch {
		return ModeWatch
	}
	return ModeOffPeak
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

// checkVersions compares each target's key's primary version with the version last verified on
// its cluster and records a job when they differ (or when nothing was verified yet: the first run
// establishes the baseline). The returned errors are the transient ones.
func (h *OffPeak) checkVersions(ctx context.Context, o *opened) ([]KeyCheck, []error) {
	var faults []error
	md, descErrs := h.describe(ctx)
	var out []KeyCheck
	for _, t := range h.deps.Config.Targets {
		kc := KeyCheck{Cluster: t.Cluster, Key: t.Key}
		if _, ok := o.clusters[t.Cluster]; !ok {
			continue // unreachable: reported with the runs
		}
		if err := descErrs[t.Key]; err != nil {
			kc.Result, kc.Reason = checkError, err.Error()
			if transient(err) {
				faults = append(faults, err)
			}
			out = append(out, kc)
			continue
		}
		m := md[t.Key]
		kc.State, kc.Primary = m.State, m.PrimaryKeyVersion
		if err := h.checkOneContained(ctx, o, t.Cluster, t.Key, m, &kc); err != nil {
			kc.Result, kc.Reason = checkError, err.Error()
			if transient(err) {
				faults = append(faults, err)
			}
		}
		out = append(out, kc)
	}
	return out, faults
}

// checkOneContained is checkOne, with a panic failing this target's check only.
func (h *OffPeak) checkOneContained(ctx context.Context, o *opened, cluster, key string, m kms.KeyMetadata, kc *KeyCheck) (err error) {
	defer panics.Recover("version check of cluster "+cluster, func(e *panics.Error) {
		h.deps.Logger.Error().Str("cluster", cluster).Str("panic", e.Value).Str("stack", string(e.Stack)).Msg("the version check panicked")
		err = e
	})
	return h.checkOne(ctx, o, cluster, key, m, kc)
}

func (h *OffPeak) checkOne(ctx context.Context, o *opened, cluster, key string, m kms.KeyMetadata, kc *KeyCheck) error {
	store := o.clusters[cluster].Store
	verified, err := store.VerifiedVersions(ctx)
	if err != nil {
		return fmt.Errorf("verified versions of cluster %s: %w", cluster, err)
	}
	for _, v := range verified {
		if v.Key == key {
			kc.Verified = v.Version
		}
	}
	if !m.Enabled() {
		kc.Result, kc.Reason = checkNotEnabled, fmt.Sprintf("the key is %s: no job (the API server cannot use it either)", m.State)
		return nil
	}
	if m.PrimaryKeyVersion == "" {
		return fmt.Errorf("describe key %s: no primary version", alicloud.Redact(key))
	}
	if kc.Verified == m.PrimaryKeyVersion {
		kc.Result = checkCurrent
		return nil
	}
	pending, err := store.Pending(ctx)
	if err != nil {
		return fmt.Errorf("pending jobs of cluster %s: %w", cluster, err)
	}
	now := h.deps.Clock.Now()
	for _, j := range pending {
		if j.Key == key && !j.Created.IsZero() {
			kc.BehindSeconds = max(kc.BehindSeconds, now.Sub(j.Created).Round(time.Second).Seconds())
		}
	}
	for _, j := range pending {
		// A job for this version, or for "the primary at run time", already covers it.
		if j.Key == key && (j.Version == m.PrimaryKeyVersion || j.Version == "") {
			kc.Result, kc.Job = checkPending, j.ID
			return nil
		}
	}
	reason := fmt.Sprintf("primary version %s, last verified %s (no event seen: automatic rotation or a missed event)", m.PrimaryKeyVersion, kc.Verified)
	if kc.Verified == "" {
		reason = fmt.Sprintf("primary version %s, nothing verified yet on this cluster (first run)", m.PrimaryKeyVersion)
	}
	notBefore := now
	if !m.LastRotationDate.IsZero() && kc.Verified != "" {
		// Give the API servers the same settle delay as after a rotation event.
		notBefore = m.LastRotationDate.Add(h.deps.Config.Settle)
	}
	rec, err := store.AddJobs(ctx, policy.Job{Cluster: cluster, Key: key, Version: m.PrimaryKeyVersion, Reason: reason, NotBefore: notBefore,
		Baseline: kc.Verified == ""})
	if err != nil {
		return fmt.Errorf("add job on cluster %s: %w", cluster, err)
	}
	kc.Reason = reason
	switch {
	case len(rec.Added) > 0:
		kc.Result, kc.Job = checkAdded, rec.Added[0].ID
	case len(rec.Existing) > 0:
		kc.Result, kc.Job = checkPending, rec.Existing[0].ID
	default:
		kc.Result = checkCurrent
	}
	return nil
}
