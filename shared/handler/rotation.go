package handler

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

// Rotation handles the EventBridge trigger of functions/rotation. It is safe for concurrent use.
type Rotation struct {
	base
}

// NewRotation returns the rotation handler.
func NewRotation(d Deps) (*Rotation, error) {
	b, err := newBase(d)
	if err != nil {
		return nil, err
	}
	return &Rotation{base: b}, nil
}

// RotationResult is the rotation function's answer.
type RotationResult struct {
	RequestID string `json:"requestId,omitempty"`
	// Error is set when the input was malformed: the invocation succeeds (FC does not retry the
	// same bytes) and says what was wrong.
	Error string `json:"error,omitempty"`
	// Ignored is set when the whole input was not for this function (a timer payload).
	Ignored string `json:"ignored,omitempty"`
	// Duplicates counts events dropped because the same input held them twice.
	Duplicates int `json:"duplicates,omitempty"`
	// Decisions are one per event, in input order.
	Decisions []DecisionResult `json:"decisions"`
	// Notes are things worth knowing that changed nothing (an alias KMS does not know...).
	Notes []string `json:"notes,omitempty"`
	// Runs are the jobs run in immediate mode.
	Runs []ClusterRun `json:"runs,omitempty"`
	// Rejected are the malformed elements of a batch, by position; the others were decided.
	Rejected []string `json:"rejected,omitempty"`
	// Unreachable are the watched clusters that could not be opened or read, with why: their state
	// was not updated (the others were).
	Unreachable []string `json:"unreachable,omitempty"`
}

// DecisionResult is one decision and what recording it did.
type DecisionResult struct {
	policy.Decision
	// Recorded is what the state changed (nil for an ignored event).
	Recorded *state.Recorded `json:"recorded,omitempty"`
	// Notified says what became of the decision's notice: "sent", "duplicate" (delivered before, or
	// another invocation is sending it), "pending: ..." (not delivered yet: kept in the outbox and
	// sent again) or "undeliverable: ..." (the webhook refused it for good).
	Notified string `json:"notified,omitempty"`
	// Unrecorded are the clusters whose state could not record the decision, with why.
	Unrecorded []string `json:"unrecorded,omitempty"`
}

// Handle handles one invocation. It returns an error only for transient faults, which Function
// Compute retries; see the package documentation.
//
// The alert path depends on no cluster: a decision's notice needs only the event, the
// configuration and KMS (the key's state), and it goes out through the outbox of every reachable
// cluster it concerns (deliver): at least once, deduplicated, kept until delivered. Each cluster's
// state is then updated on its own: a cluster that cannot be reached is named in the result and
// the log, the others are recorded, and a transient failure fails the invocation at the end so
// that Function Compute tries again (what was done is not done twice).
func (r *Rotation) Handle(ctx context.Context, payload []byte) (RotationResult, error) {
	ctx, inv := begin(ctx)
	log := r.deps.Logger.With().Str("requestId", inv.RequestID).Str("function", "rotation").Logger()
	res := RotationResult{RequestID: inv.RequestID, Decisions: []DecisionResult{}}
	margin := stopMargin(ctx, r.deps.Clock.Now())

	p, err := events.Decode(payload)
	if err != nil {
		res.Error = err.Error()
		log.Error().Err(err).Int("bytes", len(payload)).Msg("malformed input: not retried")
		return res, nil
	}
	if p.Timer != nil {
		res.Ignored = "a timer payload: functions/rotation handles EventBridge events (the timer belongs to functions/offpeak)"
		log.Warn().Str("trigger", p.Timer.TriggerName).Msg(res.Ignored)
		return res, nil
	}
	res.Duplicates = p.Duplicates
	for _, de := range p.Rejected {
		res.Rejected = append(res.Rejected, de.Error())
		log.Error().Int("element", de.Index).Str("problem", de.Error()).Msg("malformed element of the batch: not retried; the others are decided")
	}

	o := r.open(ctx)
	st, unread := o.fleet.Snapshot(ctx)
	for id, err := range unread {
		o.fail(id, fmt.Errorf("read the state of cluster %s: %w", id, err))
	}
	if len(o.failed) > 0 {
		st.Handled = map[events.DedupKey]bool{} // an unreachable cluster may have missed any event
	}
	var faults []error
	aliases, notes, err := r.aliases(ctx, eventKeyRefs(p.Events)...)
	if err != nil {
		faults = append(faults, err)
	}
	st.Aliases = aliases
	res.Notes = notes

	for _, ev := range p.Events {
		d := policy.Decide(ev, r.deps.Config, st)
		dr := DecisionResult{Decision: d}
		if d.Kind == policy.Ignore {
			logDecision(&log, dr)
			res.Decisions = append(res.Decisions, dr)
			continue
		}
		delivered := true
		if d.Notice != nil {
			if dangerous(d) {
				r.dependents(ctx, o, d.Notice, &log) // how many Secrets depend on the key (dependents.go)
			}
			r.keyState(ctx, d.Notice)
			status, err := r.deliver(ctx, o, d.Event, *d.Notice, inv.RequestID, false, &log)
			dr.Notified = status
			if err != nil {
				delivered = false
				faults = append(faults, err)
			} else {
				// The timer's key check need not repeat it today, nor announce a recovery
				// this event's notice already announced.
				r.recordAlerted(ctx, o, *d.Notice, &log)
			}
		}
		// The event counts as handled only once its notice is out: a retry decides it again.
		rec, failed := o.fleet.Record(ctx, d, delivered)
		dr.Recorded = &rec
		for _, id := range sortedKeys(failed) {
			dr.Unrecorded = append(dr.Unrecorded, id+": "+failed[id].Error())
			if transient(failed[id]) || o.failed[id] != nil {
				faults = append(faults, failed[id])
			}
		}
		// Later events of the same input see this one.
		if delivered && len(failed) == 0 {
			st.Handled[ev.DedupKey()] = true
		}
		st.Pending = append(st.Pending, d.Jobs...)
		logDecision(&log, dr)
		res.Decisions = append(res.Decisions, dr)
	}
	res.Unreachable = o.unreachable()
	for _, u := range res.Unreachable {
		log.Error().Str("cluster", u).Msg("cluster not reachable: its state was not updated in this invocation")
	}
	faults = append(faults, o.faults()...)

	if r.deps.Config.RunMode == config.RunImmediate {
		runs, err := r.runDue(ctx, o, inv.RequestID, margin, &log)
		res.Runs = runs
		if err != nil {
			faults = append(faults, err)
		}
	}
	log.Info().Int("events", len(p.Events)).Int("duplicates", p.Duplicates).Int("rejected", len(p.Rejected)).Int("runs", len(res.Runs)).
		Strs("unreachable", res.Unreachable).Msg("invocation done")
	if err := errors.Join(faults...); err != nil {
		return fail(&log, res, err)
	}
	return res, nil
}

// keyState reads the key's state into the notice ("the key is now Disabled / already Enabled
// again"); a failure leaves it unknown (the notice goes out all the same).
func (r *Rotation) keyState(ctx context.Context, n *policy.Notice) {
	if n.Key == "" {
		return
	}
	m, err := r.deps.KMS.DescribeKey(ctx, n.Key)
	if err != nil {
		n.Impact = strings.TrimSuffix(n.Impact, ".") + ". The key's state now could not be read: " + err.Error() + "."
		return
	}
	n.KeyState = m.State
	switch {
	case m.Enabled() && n.Severity == policy.Critical:
		n.Impact = strings.TrimSuffix(n.Impact, ".") + ". The key is already " + m.State + " again."
	default:
		n.Impact = strings.TrimSuffix(n.Impact, ".") + ". The key is now " + m.State + "."
	}
}
