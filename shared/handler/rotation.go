package handler

import (
	"context"
	"errors"
	"fmt"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/notify"
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
}

// DecisionResult is one decision and what recording it did.
type DecisionResult struct {
	policy.Decision
	// Recorded is what the state changed (nil for an ignored event).
	Recorded *state.Recorded `json:"recorded,omitempty"`
	// Notified says what became of the decision's notice: "sent", "duplicate" (another delivery
	// of the event sent it) or "undeliverable: ..." (the webhook refused it for good).
	Notified string `json:"notified,omitempty"`
}

// Handle handles one invocation. It returns an error only for transient faults, which Function
// Compute retries; see the package documentation.
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

	o, err := r.open(ctx)
	if err != nil {
		return fail(&log, res, err)
	}
	st, err := o.fleet.Snapshot(ctx)
	if err != nil {
		return fail(&log, res, fmt.Errorf("state snapshot: %w", err))
	}
	aliases, notes, err := r.aliases(ctx)
	if err != nil {
		return fail(&log, res, err)
	}
	st.Aliases = aliases
	res.Notes = notes

	for _, ev := range p.Events {
		d := policy.Decide(ev, r.deps.Config, st)
		dr := DecisionResult{Decision: d}
		if d.Kind != policy.Ignore {
			rec, err := o.fleet.Record(ctx, d)
			if err != nil {
				return fail(&log, res, fmt.Errorf("record decision on event %s: %w", ev.DedupKey(), err))
			}
			dr.Recorded = &rec
			// Later events of the same input see this one.
			if st.Handled == nil {
				st.Handled = map[events.DedupKey]bool{}
			}
			st.Handled[ev.DedupKey()] = true
			st.Pending = append(st.Pending, d.Jobs...)
			if d.Notice != nil && rec.First && dangerous(d) {
				r.dependents(ctx, o, d.Notice, &log) // how many Secrets depend on the key (dependents.go)
			}
			if d.Notice != nil {
				if !rec.First {
					dr.Notified = "duplicate"
				} else if err := r.notify(ctx, *d.Notice); err != nil {
					var de *notify.DeliveryError
					if errors.As(err, &de) && !de.Temporary {
						dr.Notified = "undeliverable: " + err.Error()
					} else {
						// Decide and send again on the retry.
						if ferr := o.fleet.Forget(ctx, ev.DedupKey()); ferr != nil {
							err = errors.Join(err, fmt.Errorf("forget event %s: %w", ev.DedupKey(), ferr))
						}
						logDecision(&log, dr)
						return fail(&log, res, fmt.Errorf("deliver the notice of event %s: %w", ev.DedupKey(), err))
					}
				} else {
					dr.Notified = "sent"
				}
			}
		}
		logDecision(&log, dr)
		res.Decisions = append(res.Decisions, dr)
	}

	if r.deps.Config.RunMode == config.RunImmediate {
		runs, err := r.runDue(ctx, o, inv.RequestID, margin, &log)
		res.Runs = runs
		if err != nil {
			return fail(&log, res, err)
		}
	}
	log.Info().Int("events", len(p.Events)).Int("duplicates", p.Duplicates).Int("runs", len(res.Runs)).Msg("invocation done")
	return res, nil
}

func (r *Rotation) notify(ctx context.Context, n policy.Notice) error {
	if r.deps.Notifier == nil {
		return nil
	}
	return r.deps.Notifier.Send(ctx, n)
}
