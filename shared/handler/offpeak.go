package handler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rekey-dev/rekey/shared/alicloud"
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
	// TriggerTime is the tick's time; InWindow whether it fell inside Window.
	TriggerTime time.Time `json:"triggerTime,omitzero"`
	Window      string    `json:"window,omitempty"`
	InWindow    bool      `json:"inWindow"`
	// Keys are the version checks, one per target.
	Keys []KeyCheck `json:"keys,omitempty"`
	// Clusters are the runs, inside the window.
	Clusters []ClusterRun `json:"clusters,omitempty"`
}

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
}

// Version check results.
const (
	checkCurrent    = "current"
	checkAdded      = "job added"
	checkPending    = "job pending"
	checkNotEnabled = "key not enabled"
	checkError      = "error"
)

// Handle handles one timer tick. The version check runs on every tick; jobs run only inside the
// window. Faults on one key or cluster do not stop the others: they are reported in the result,
// and the invocation fails at the end when any was transient (a signal for monitoring; the next
// tick is the retry).
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
	res.TriggerTime = p.Timer.TriggerTime
	res.InWindow = h.deps.Config.Window.Contains(p.Timer.TriggerTime)

	o, err := h.open(ctx)
	if err != nil {
		return fail(&log, res, err)
	}
	var faults []error
	res.Keys, faults = h.checkVersions(ctx, o)
	for _, k := range res.Keys {
		ev := log.Info()
		if k.Result == checkError || k.Result == checkNotEnabled {
			ev = log.Warn()
		}
		ev.Str("cluster", k.Cluster).Str("key", alicloud.Redact(k.Key)).Str("primary", k.Primary).Str("verified", k.Verified).
			Str("job", k.Job).Msg("version check: " + k.Result + reasonSuffix(k.Reason))
	}
	if res.InWindow {
		runs, err := h.runDue(ctx, o, inv.RequestID, margin, &log)
		res.Clusters = runs
		if err != nil {
			faults = append(faults, err)
		}
	}
	log.Info().Time("triggerTime", res.TriggerTime).Bool("inWindow", res.InWindow).Int("clusters", len(res.Clusters)).Msg("tick done")
	if err := errors.Join(faults...); err != nil {
		return fail(&log, res, err)
	}
	return res, nil
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
	notBefore := h.deps.Clock.Now()
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
