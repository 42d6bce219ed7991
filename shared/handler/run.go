package handler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/panics"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

// ClusterRun is what an invocation did on one cluster.
type ClusterRun struct {
	Cluster string `json:"cluster"`
	// Status summarises the cluster: the status of its last job, "idle" when no job was due, or
	// "error" when the cluster could not be worked on.
	Status string `json:"status"`
	// Reason says why, in words.
	Reason string `json:"reason,omitempty"`
	// Jobs are the jobs run, in order.
	Jobs []JobResult `json:"jobs,omitempty"`
	// Waiting counts pending jobs whose notBefore has not passed.
	Waiting int `json:"waiting,omitempty"`
}

// JobResult is one job run.
type JobResult struct {
	ID      string     `json:"id"`
	Key     string     `json:"key"`
	Version string     `json:"version,omitempty"`
	Outcome JobOutcome `json:"outcome"`
	// Completed lists the pending jobs the verified version satisfied (removed from the state),
	// the job itself included.
	Completed []string `json:"completed,omitempty"`
	// Evidence is the ID of the evidence record that holds the outcome ("" when none was kept);
	// EvidenceError says what went wrong keeping it.
	Evidence      string `json:"evidence,omitempty"`
	EvidenceError string `json:"evidenceError,omitempty"`
	Error         string `json:"error,omitempty"`
}

// Cluster statuses besides the job statuses.
const (
	clusterIdle    = "idle"
	clusterError   = "error"
	clusterSkipped = "skipped"
)

// runDue runs the due jobs of every cluster, one cluster at a time: a cluster whose Lease another
// invocation holds (busy) is left to it. It stops starting work when less than two stop margins
// remain before ctx's deadline. The error joins the transient faults met; the runs say what
// happened to every cluster in any case.
func (h *base) runDue(ctx context.Context, o *opened, holder string, margin time.Duration, log *zerolog.Logger) ([]ClusterRun, error) {
	var (
		runs    []ClusterRun
		faults  []error
		stopped bool
	)
	for _, id := range o.order {
		run := ClusterRun{Cluster: id}
		if stopped {
			run.Status, run.Reason = clusterSkipped, "the invocation's deadline is near"
			runs = append(runs, run)
			continue
		}
		err := h.runClusterContained(ctx, o.clusters[id], holder, margin, &run, log)
		if err != nil {
			run.Status, run.Reason = clusterError, err.Error()
			if transient(err) {
				faults = append(faults, err)
			}
		}
		runs = append(runs, run)
		if run.Status == string(StatusPartial) || run.Status == clusterSkipped {
			stopped = true
		}
	}
	return runs, errors.Join(faults...)
}

// runClusterContained is runCluster, with a panic failing this cluster only: the other clusters
// of the invocation still run (a panic would otherwise end the Function Compute instance, and the
// invocation with it).
func (h *base) runClusterContained(ctx context.Context, c Cluster, holder string, margin time.Duration, run *ClusterRun, log *zerolog.Logger) (err error) {
	defer panics.Recover("cluster "+c.ID, func(e *panics.Error) {
		log.Error().Str("cluster", c.ID).Str("panic", e.Value).Str("stack", string(e.Stack)).Msg("working on the cluster panicked; going on with the others")
		err = e
	})
	return h.runCluster(ctx, c, holder, margin, run, log)
}

// runCluster runs the due jobs of one cluster, earliest notBefore first, re-reading the pending
// jobs after each completed one (a completed job may satisfy others).
func (h *base) runCluster(ctx context.Context, c Cluster, holder string, margin time.Duration, run *ClusterRun, log *zerolog.Logger) error {
	target, ok := h.deps.Config.Target(c.ID)
	if !ok {
		return fmt.Errorf("cluster %s is not configured", c.ID)
	}
	tried := map[string]bool{}
	run.Status = clusterIdle
	for {
		pending, err := c.Store.Pending(ctx)
		if err != nil {
			return fmt.Errorf("pending jobs of cluster %s: %w", c.ID, err)
		}
		now := h.deps.Clock.Now()
		var next *state.JobRecord
		run.Waiting = 0
		for i := range pending {
			switch {
			case tried[pending[i].ID]:
			case pending[i].NotBefore.After(now):
				run.Waiting++
			case next == nil:
				next = &pending[i]
			}
		}
		if next == nil {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && dl.Sub(now) < 2*margin {
			run.Status, run.Reason = clusterSkipped, "the invocation's deadline is near"
			return nil
		}
		tried[next.ID] = true
		res := JobResult{ID: next.ID, Key: next.Key, Version: next.Version}
		prev := verifiedBefore(ctx, c.Store, next.Key)
		out, err := h.deps.Run(ctx, JobRequest{Job: *next, Target: target, Cluster: c, Holder: holder, StopMargin: margin, Logger: log})
		if err != nil {
			res.Error = err.Error()
			run.Jobs = append(run.Jobs, res)
			return fmt.Errorf("job %s on cluster %s: %w", next.ID, c.ID, err)
		}
		res.Outcome = out
		run.Status, run.Reason = string(out.Status), out.Reason
		ev := log.Info()
		if out.Status != StatusDone && out.Status != StatusBusy && out.Status != StatusPartial {
			ev = log.Warn()
		}
		ev.Str("cluster", c.ID).Str("job", next.ID).Str("status", string(out.Status)).Str("verifiedVersion", out.VerifiedVersion).Msg("job: " + out.Reason)
		if wantsEvidence(out.Status, endsWindow(ctx, h.deps.Clock.Now(), margin)) {
			res.Evidence, res.EvidenceError = h.keepEvidence(ctx, c, *next, prev, out, log)
		}
		if out.Stalled == StalledNotice {
			h.stalled(ctx, c, *next, out, holder, log)
		}
		switch out.Status {
		case StatusDone:
			if out.VerifiedVersion == "" {
				run.Jobs = append(run.Jobs, res)
				return fmt.Errorf("job %s on cluster %s: done without a verified version", next.ID, c.ID)
			}
			// The job records its verified version itself (state.Store.Complete); should it still
			// be pending, complete it here, so that it is never run again.
			after, err := c.Store.Pending(ctx)
			if err == nil && slices.ContainsFunc(after, func(j state.JobRecord) bool { return j.ID == next.ID }) {
				_, err = c.Store.Complete(ctx, *next, out.VerifiedVersion)
				if err == nil {
					after, err = c.Store.Pending(ctx)
				}
			}
			if err != nil {
				res.Error = err.Error()
				run.Jobs = append(run.Jobs, res)
				return fmt.Errorf("complete job %s on cluster %s: %w", next.ID, c.ID, err)
			}
			for _, j := range pending {
				if !slices.ContainsFunc(after, func(a state.JobRecord) bool { return a.ID == j.ID }) {
					res.Completed = append(res.Completed, j.ID)
				}
			}
			run.Jobs = append(run.Jobs, res)
			continue
		case StatusFailed, StatusSuspicious:
			// A person must look: say so once, and do not run the same pass again every tick.
			if err := h.deferJob(ctx, c, *next, out, holder, log); err != nil {
				res.Error = err.Error()
			}
			run.Jobs = append(run.Jobs, res)
			return nil
		default:
			// busy: another invocation works on this cluster; partial: the deadline came;
			// refused: the next job of this cluster would meet the same.
			run.Jobs = append(run.Jobs, res)
			return nil
		}
	}
}

// StalledNotice is the number of invocations in a row without progress on one job that sends a
// warning notice (once: the count goes on, the notice is not repeated until progress resets it).
const StalledNotice = 2

// stalled sends the notice of a job that made no progress StalledNotice invocations in a row. A
// failed delivery is logged: the job's own outcome stands either way.
func (h *base) stalled(ctx context.Context, c Cluster, j state.JobRecord, out JobOutcome, holder string, log *zerolog.Logger) {
	cluster := c.ID
	n := policy.Notice{
		Severity: policy.Warning,
		Title:    fmt.Sprintf("rekey job %s on cluster %s made no progress in %d invocations in a row", j.ID, cluster, out.Stalled),
		Key:      alicloud.Redact(j.Key),
		Clusters: []string{cluster},
		Action:   "re-encryption job",
		Impact: "Secrets stay under the old key version until the job moves: " + out.NoProgress +
			". Give the function a longer timeout, or check the API server's health and load.",
		Actor:   "rekey",
		Account: h.deps.Config.AccountID,
		Region:  h.deps.Config.Region,
		Time:    h.deps.Clock.Now(),
	}
	h.jobNotice(ctx, c, fmt.Sprintf("%s/stalled/%d", j.ID, out.Stalled), n, holder, log)
}

// Backoff of a job that ended failed or suspicious: its next run waits RetryBackoff, doubling with
// each such outcome in a row, at most MaxRetryBackoff.
const (
	RetryBackoff    = 30 * time.Minute
	MaxRetryBackoff = 8 * time.Hour
)

// deferJob records a failed or suspicious outcome on the job (state.Store.Defer), moving its next
// run out by the backoff, and sends one notice per job and kind of outcome naming the cluster, the
// key and the cause. A notice that cannot be delivered is logged; the deferral stands.
func (h *base) deferJob(ctx context.Context, c Cluster, j state.JobRecord, out JobOutcome, holder string, log *zerolog.Logger) error {
	wait := RetryBackoff
	for i := 0; i < j.Attempts && wait < MaxRetryBackoff; i++ {
		wait *= 2
	}
	wait = min(wait, MaxRetryBackoff)
	d, err := c.Store.Defer(ctx, j.ID, h.deps.Clock.Now().Add(wait), string(out.Status), out.Reason)
	if err != nil {
		return fmt.Errorf("defer job %s on cluster %s: %w", j.ID, c.ID, err)
	}
	log.Warn().Str("cluster", c.ID).Str("job", j.ID).Str("status", string(out.Status)).Int("attempts", d.Job.Attempts).
		Time("nextRun", d.Job.NotBefore).Msg("job deferred: a person must look")
	if !d.NewOutcome {
		return nil
	}
	what := "failed"
	if out.Status == StatusSuspicious {
		what = "is suspicious"
	}
	n := policy.Notice{
		Severity: policy.Warning,
		Title:    fmt.Sprintf("rekey job %s on cluster %s %s", j.ID, c.ID, what),
		Key:      alicloud.Redact(j.Key),
		Clusters: []string{c.ID},
		Action:   "re-encryption job",
		Impact: fmt.Sprintf("%s. The Secrets of cluster %s may still be under an older key version: do not disable or delete older key versions. "+
			"rekey tries again at %s (backing off while the outcome repeats; this notice is not repeated).",
			out.Reason, c.ID, d.Job.NotBefore.UTC().Format(time.RFC3339)),
		Actor:   "rekey",
		Account: h.deps.Config.AccountID,
		Region:  h.deps.Config.Region,
		Time:    h.deps.Clock.Now(),
	}
	h.jobNotice(ctx, c, j.ID+"/"+string(out.Status), n, holder, log)
	return nil
}

// send delivers a notice to the webhook (and the log) once; deliver is how notices are sent.
func (h *base) send(ctx context.Context, n policy.Notice, log *zerolog.Logger) error {
	log.Warn().Strs("clusters", n.Clusters).Str("severity", string(n.Severity)).Msg("notice: " + n.Title)
	if h.deps.Notifier == nil {
		return nil
	}
	return h.deps.Notifier.Send(ctx, n)
}

// jobNotice delivers a notice about a job of cluster c through the cluster's outbox (deliver),
// deduplicated on key; a failure is logged (the job's outcome is in the result either way, and the
// timer's sweep sends a pending notice again).
func (h *base) jobNotice(ctx context.Context, c Cluster, key string, n policy.Notice, holder string, log *zerolog.Logger) {
	o := &opened{order: []string{c.ID}, clusters: map[string]Cluster{c.ID: c}, failed: map[string]error{}}
	ev := events.DedupKey{Source: jobNoticeSource, ID: key}
	if _, err := h.deliver(ctx, o, ev, n, holder, false, log); err != nil {
		log.Warn().Err(err).Str("cluster", c.ID).Msg("job notice pending")
	}
}

// jobNoticeSource is the DedupKey source of notices about jobs (not about an event).
const jobNoticeSource = "rekey.job"
