package job

import (
	"context"
	"errors"
	"fmt"

	"github.com/rekey-dev/rekey/shared/panics"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/storagemode"
	"github.com/rekey-dev/rekey/shared/verify"
)

// once is a job without State: one pass, judged, then (unless skipped) verified. This is `rekey
// run`.
func (r *runner) once(ctx context.Context) (Outcome, error) {
	if o, err := r.connect(ctx); o != nil || err != nil {
		return deref(o), err
	}
	d, err := r.decideStrategy(ctx)
	if err != nil {
		return *failedOutcome(err), nil
	}
	out := Outcome{Strategy: &d}
	rot, err := r.rotation(ctx)
	if err != nil {
		return out, err
	}
	if r.gateNeeded(d) {
		ev, err := r.gate(ctx)
		if err != nil {
			return r.gateFailed(ctx, out, err), nil
		}
		out.Adoption = ev
		if rot != nil {
			rot.ProvedBefore = ev.Direct
		}
	}
	e, err := r.engine(d.Strategy, func(o *reencrypt.Options) {
		o.DryRun, o.OnListed, o.OnObject, o.StopMargin = r.spec.DryRun, r.deps.OnListed, r.deps.OnObject, r.deps.StopMargin
	})
	if err != nil {
		return *failedOutcome(err), nil
	}
	r.log.Info().Str("server", r.deps.Rest.Host).Str("version", r.version).Str("strategy", string(d.Strategy)).Msg("starting")
	wctx, stopWatch := r.watchKey(ctx) // keywatch.go: a key disabled mid-pass stops it at once
	s, runErr := e.Run(wctx)
	stopWatch()
	out.Summary = &s
	if runErr != nil {
		return stopped(out, runErr)
	}
	v := r.judge(ctx, s.Strategy, s.Total, &d, rot)
	out.Verdict = &v
	switch {
	case !s.OK():
		out.Status, out.Reason = StatusFailed, fmt.Sprintf("%d objects failed", s.Total.Failed)
		return out, nil
	case v.Suspicious():
		out.Status, out.Reason = StatusSuspicious, v.Message
		return out, nil
	}
	if !r.spec.SkipVerify && !r.spec.DryRun {
		report, err := r.verifier(ctx, nil)
		if err != nil {
			return verifierFailed(out, err)
		}
		out.Verify = &report
		switch report.Verdict {
		case verify.Pass:
		case verify.Unknown:
			out.Status, out.Reason = StatusPartial, "the verifier could not check everything: "+verifyProblems(report)
			return out, nil
		default:
			out.Status, out.Reason = StatusFailed, "the verifier FAILs: "+verifyProblems(report)
			return out, nil
		}
		out.VerifiedVersion = r.primary
	}
	out.Status, out.Reason = StatusDone, v.Message
	return out, nil
}

func deref(o *Outcome) Outcome {
	if o == nil {
		return Outcome{Status: StatusFailed}
	}
	return *o
}

// rotation returns the rotation the job follows: the key's primary version, or nil without a key
// and for a baseline job (no rotation observed: the primary is read, nothing is judged against it).
func (r *runner) rotation(ctx context.Context) (*storagemode.Rotation, error) {
	if r.spec.KeyID == "" {
		return nil, nil
	}
	primary, err := r.primaryVersion(ctx)
	if err != nil {
		return nil, err
	}
	r.primary = primary
	if r.spec.Baseline {
		r.log.Info().Str("key", r.spec.KeyID).Str("primary", primary).Msg("baseline job: no rotation observed since rekey started watching; a pass that rewrites nothing is not suspicious")
		return nil, nil
	}
	if r.spec.Version != "" && r.spec.Version != primary {
		r.log.Info().Str("key", r.spec.KeyID).Str("jobVersion", r.spec.Version).Str("primary", primary).
			Msg("the key's primary version moved since the job was created; bringing every object to the primary")
	}
	return &storagemode.Rotation{KeyID: r.spec.KeyID, PrimaryVersion: primary}, nil
}

// gateFailed turns an adoption gate error into an outcome: partial when the job ran out of time
// (or, with State, to try again on the next invocation), failed otherwise.
func (r *runner) gateFailed(ctx context.Context, out Outcome, err error) Outcome {
	out.Err, out.Reason = err, err.Error()
	out.Status = StatusFailed
	if ctx.Err() != nil || r.deps.State != nil {
		out.Status = StatusPartial
	}
	return out
}

// stopped classifies an engine error.
func stopped(out Outcome, err error) (Outcome, error) {
	out.Err, out.Reason = err, "the pass stopped: "+err.Error()
	var pe *reencrypt.PermissionError
	var ku *KeyUnusableError
	var pan *panics.Error
	switch {
	case errors.As(err, &pe), errors.As(err, &ku), errors.As(err, &pan):
		out.Status = StatusFailed
	case errors.Is(err, state.ErrLeaseLost), errors.Is(err, state.ErrCheckpointTaken):
		out.Status = StatusBusy
	case errors.Is(err, reencrypt.ErrStopped), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		out.Status = StatusPartial
	default:
		out.Status = StatusPartial
		return out, fmt.Errorf("the pass stopped: %w", err)
	}
	return out, nil
}

func verifierFailed(out Outcome, err error) (Outcome, error) {
	out.Err, out.Reason = err, err.Error()
	var ie *verify.InputError
	switch {
	case errors.As(err, &ie):
		out.Status, out.Err = StatusFailed, &SpecError{err}
		return out, nil
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		out.Status = StatusPartial
		return out, nil
	}
	out.Status = StatusPartial
	return out, err
}

// verifyFailedLayers names the layers of r that FAILed.
func verifyFailedLayers(r verify.Report) []string {
	var out []string
	for _, l := range r.Layers {
		if l.Status == verify.Fail {
			out = append(out, l.Name)
		}
	}
	return out
}

func verifyProblems(r verify.Report) string {
	var problems []string
	for _, l := range r.Layers {
		for _, p := range l.Problems {
			problems = append(problems, l.Name+": "+p)
		}
	}
	problems = append(problems, r.Reasons...)
	if len(problems) == 0 {
		return string(r.Verdict)
	}
	out := problems[0]
	for _, p := range problems[1:] {
		out += "; " + p
	}
	return out
}
