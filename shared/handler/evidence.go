package handler

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/evidence"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/keyref"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/verify"
)

// windowEndKey is the context key of the off-peak window's end (runDue under the off-peak timer).
type windowEndKey struct{}

func withWindowEnd(ctx context.Context, end time.Time) context.Context {
	return context.WithValue(ctx, windowEndKey{}, end)
}

// endsWindow reports whether a job that stopped now, with this stop margin, stopped because the
// off-peak window ends.
func endsWindow(ctx context.Context, now time.Time, margin time.Duration) bool {
	end, ok := ctx.Value(windowEndKey{}).(time.Time)
	return ok && !now.Add(2*margin+time.Second).Before(end)
}

// wantsEvidence reports whether an outcome gets an evidence record: every outcome that ends a job
// or needs a person (done, suspicious, failed, refused), and a partial one that ends the window.
func wantsEvidence(s Status, windowEnded bool) bool {
	switch s {
	case StatusDone, StatusSuspicious, StatusFailed, StatusRefused:
		return true
	case StatusPartial:
		return windowEnded
	}
	return false
}

// verifiedBefore returns the version last verified for key on the cluster ("" when none, or when
// the state cannot be read: the record then says the versions before are not known).
func verifiedBefore(ctx context.Context, st *state.Store, key string) string {
	vs, err := st.VerifiedVersions(ctx)
	if err != nil {
		return ""
	}
	for _, v := range vs {
		if v.Key == key {
			return v.Version
		}
	}
	return ""
}

// keepEvidence writes the evidence record of a job's outcome into its cluster and as one log line
// (evidence.LogFields). It returns the ID of the record that holds the outcome, and what went wrong
// keeping it ("" when nothing did). A record that cannot be written leaves the job's outcome as it
// is: the log line still carries the record, and the cause is logged and returned.
func (h *base) keepEvidence(ctx context.Context, c Cluster, j state.JobRecord, prev string, out JobOutcome, log *zerolog.Logger) (id, problem string) {
	r := composeRecord(c.ID, j, prev, out, h.deps.Clock.Now())
	ev := log.Info()
	if out.Status != StatusDone && out.Status != StatusPartial {
		ev = log.Warn()
	}
	r.Log(ev)
	if same := repeats(ctx, c.Store, r); same != "" {
		// The same outcome again (a refused job every tick, a deferred job failing the same way):
		// one record says it; more would push older records out of the kept 100.
		log.Info().Str("cluster", c.ID).Str("record", same).Msg("evidence: the same outcome as the job's last record; no new record")
		return same, ""
	}
	body, err := json.Marshal(r)
	if err == nil {
		err = c.Store.AddEvidence(ctx, r.ID, r.EndedAt, body, 0)
	}
	switch {
	case err == nil:
		return r.ID, ""
	case errors.Is(err, state.ErrNotPruned):
		log.Warn().Err(err).Str("cluster", c.ID).Str("record", r.ID).Msg("evidence record kept; older records not pruned")
		return r.ID, err.Error()
	default:
		log.Error().Err(err).Str("cluster", c.ID).Str("record", r.ID).Msg("evidence record not kept in the cluster (the log line above has it)")
		return "", "evidence record not kept: " + err.Error()
	}
}

// repeats returns the ID of the newest record of r's job when it has r's status and reason ("" when
// there is none, or the records cannot be read: then r is written).
func repeats(ctx context.Context, st *state.Store, r evidence.Record) string {
	stored, err := st.Evidence(ctx)
	if err != nil {
		return ""
	}
	for i := len(stored) - 1; i >= 0; i-- {
		var prev evidence.Record
		if json.Unmarshal(stored[i].Body, &prev) != nil || prev.Job != r.Job {
			continue
		}
		if prev.Status == r.Status && prev.Reason == r.Reason {
			return prev.ID
		}
		return ""
	}
	return ""
}

// composeRecord builds the evidence record of job j's outcome on cluster, which ended at now; prev
// is the version verified before the job. The job's full outcome (job.Outcome in out.Detail) gives
// the phases, adoption, counts and verifier layers; without it the record holds what the handler
// knows.
func composeRecord(cluster string, j state.JobRecord, prev string, out JobOutcome, now time.Time) evidence.Record {
	r := evidence.Record{
		Schema:       evidence.Schema,
		ID:           evidence.RecordID(j.ID, now),
		Cluster:      cluster,
		Job:          j.ID,
		Key:          j.Key,
		Status:       string(out.Status),
		Reason:       out.Reason,
		StartedAt:    now,
		EndedAt:      now,
		RekeyVersion: evidence.RekeyVersion(),
		Retirement:   evidence.Retirement{Verdict: string(verify.RetireCannotTell), Statement: evidence.RetirementStatement},
	}
	if ref, err := keyref.Parse(j.Key); err == nil && ref.Alias != "" {
		r.Alias = ref.Alias
	}
	r.Trigger = evidence.Trigger{Kind: evidence.TriggerTimer, Reason: j.Reason}
	if j.Event.ID != "" {
		r.Trigger.Kind, r.Trigger.Source, r.Trigger.EventID = evidence.TriggerEvent, j.Event.Source, j.Event.ID
	}
	if t := j.Trigger; t != nil {
		r.Trigger.Name, r.Trigger.Actor, r.Trigger.RecordID, r.Trigger.Time = t.Name, t.Actor, t.RecordID, t.Time
		if t.RecordID != "" {
			r.TrailEventIDs = append(r.TrailEventIDs, t.RecordID)
		}
	}
	r.ToVersion = out.VerifiedVersion
	if r.ToVersion == "" {
		r.ToVersion = j.Version
	}

	d, ok := out.Detail.(job.Outcome)
	if !ok {
		r.FromVersions = fromVersions(prev, r.ToVersion, nil)
		return r
	}
	for _, p := range d.Phases {
		r.Phases = append(r.Phases, evidence.Phase{Name: p.Name, StartedAt: p.StartedAt, EndedAt: p.EndedAt})
		if p.StartedAt.Before(r.StartedAt) {
			r.StartedAt = p.StartedAt
		}
	}
	if a := d.Adoption; a != nil {
		r.Adoption = &evidence.Adoption{Kind: string(a.Kind), Direct: a.Direct, Replicas: a.Replicas, Detail: a.Detail}
		if r.ToVersion == "" {
			r.ToVersion = a.Version
		}
	}
	if s := d.Strategy; s != nil {
		r.Strategy = &evidence.Strategy{Name: string(s.Strategy), Rule: string(s.Rule), Reason: s.Reason}
	}
	switch {
	case d.PassTotal != nil:
		r.Pass = *d.PassTotal
	case d.Summary != nil && d.Convergence == nil:
		r.Pass = d.Summary.Total
	}
	var keyVersions []string
	var rotated time.Time
	if j.Trigger != nil {
		rotated = j.Trigger.Time
	}
	if v := d.Verify; v != nil {
		r.Verdict = string(v.Verdict)
		for _, l := range v.Layers {
			r.Layers = append(r.Layers, evidence.Layer{Name: l.Name, Status: string(l.Status), Reasons: l.Reasons})
		}
		if v.Convergence != nil {
			c := v.Convergence.Total
			r.Convergence = &c
		}
		if v.Replicas != nil {
			r.Replicas, r.ExpectedReplicas = v.Replicas.Covered, v.Replicas.Expected
		}
		if v.Retirement != nil {
			r.Retirement.Verdict, r.Retirement.Reason = string(v.Retirement.Verdict), v.Retirement.Reason
		}
		if v.Key != nil {
			r.KeyID = v.Key.KeyID
			keyVersions = v.Key.Versions
			if r.ToVersion == "" {
				r.ToVersion = v.Key.PrimaryKeyVersion
			}
			if rotated.IsZero() {
				rotated = v.Key.LastRotationDate
			}
		}
		if v.Audit != nil {
			for _, id := range v.Audit.EventIDs {
				if !slices.Contains(r.TrailEventIDs, id) {
					r.TrailEventIDs = append(r.TrailEventIDs, id)
				}
			}
		}
	} else if d.Convergence != nil {
		c := d.Convergence.Total
		r.Convergence = &c
	}
	r.FromVersions = fromVersions(prev, r.ToVersion, keyVersions)
	for _, p := range r.Phases {
		if p.Name == job.PhaseGate && !p.EndedAt.IsZero() && !rotated.IsZero() && p.EndedAt.After(rotated) {
			r.TimeToAdoptionSeconds = p.EndedAt.Sub(rotated).Round(time.Second).Seconds()
		}
	}
	return r
}

// fromVersions is what rekey knows of the versions the objects were under before: the version
// verified before the job; without one (a first job), every other version of the key.
func fromVersions(prev, to string, keyVersions []string) []string {
	if prev != "" {
		if prev == to {
			return nil
		}
		return []string{prev}
	}
	var out []string
	for _, v := range keyVersions {
		if v != to {
			out = append(out, v)
		}
	}
	return out
}
