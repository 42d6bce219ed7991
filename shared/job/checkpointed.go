package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/panics"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/replicas"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/verify"
)

// Checkpoint notes (state.Checkpoint.Notes) the job keeps.
const (
	// NotePrimary is the key version the job is bringing objects to; a checkpoint for another
	// primary (the key rotated again) is started over.
	NotePrimary = "primary"
	// NoteGated is the version the adoption gate proved adopted; NoteProved is "true" when that
	// proof was direct evidence.
	NoteGated  = "gated"
	NoteProved = "proved"
	// NoteStrategy is the strategy of the pass, kept across invocations.
	NoteStrategy = "strategy"
	// NotePass holds the finished pass's totals (JSON reencrypt.Counts) during convergence.
	NotePass = "pass"
	// NoteConverged is "true" once the convergence pass completed without rewriting anything.
	NoteConverged = "converged"
	// NoteRoutes holds the phase's counts per API server replica (JSON []reencrypt.RouteSummary).
	NoteRoutes = "routes"
	// NotePhases holds when each phase of the job ran (JSON []PhaseTime), over every invocation.
	NotePhases = "phases"
	// NoteAdoption holds the adoption gate's evidence (JSON adoption.Evidence).
	NoteAdoption = "adoption"
)

// checkpointed is a job with State: under the cluster's Lease, resumable from its checkpoint, and
// done only when a full pass and the verifier passed.
func (r *runner) checkpointed(ctx context.Context) (out Outcome, err error) {
	st := r.deps.State
	jobID := state.JobID(st.Cluster(), r.spec.KeyID, r.spec.Version)
	out = Outcome{Job: jobID}
	lease, ok, err := st.TryAcquire(ctx, r.deps.Holder, r.deps.LeaseDuration)
	if err != nil {
		out.Status, out.Err, out.Reason = StatusPartial, err, err.Error()
		return out, fmt.Errorf("job %s: %w", jobID, err)
	}
	if !ok {
		info := lease.Info()
		out.Status, out.Lease, out.Reason = StatusBusy, &info, "already running: "+lease.String()
		return out, nil
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer func() {
		// The Lease renewal panicked (renew): whatever step that cut short, the job failed.
		var pan *panics.Error
		if cause := context.Cause(wctx); errors.As(cause, &pan) {
			out.Status, out.Err, err = StatusFailed, pan, nil
			if !strings.Contains(out.Reason, pan.Error()) {
				out.Reason = "the job stopped: " + pan.Error()
			}
		}
	}()
	stopRenewing := r.renew(wctx, lease, cancel)
	defer func() {
		stopRenewing()
		rctx, c := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer c()
		if err := lease.Release(rctx); err != nil {
			r.log.Warn().Err(err).Msg("release the run lease")
		}
	}()
	margin := r.margin(ctx)
	sctx, scancel := context.WithCancel(wctx)
	if dl, ok := ctx.Deadline(); ok && margin > 0 {
		sctx, scancel = context.WithDeadlineCause(wctx, dl.Add(-margin), fmt.Errorf("%w (%s before it)", reencrypt.ErrStopped, margin))
	}
	defer scancel()

	if o, err := r.connect(sctx); o != nil || err != nil {
		o2 := deref(o)
		o2.Job = jobID
		return o2, err
	}
	d, err := r.decideStrategy(sctx)
	if err != nil {
		o := failedOutcome(err)
		o.Job = jobID
		return *o, nil
	}
	out.Strategy = &d
	rot, err := r.rotation(sctx)
	if err != nil {
		out.Status, out.Err, out.Reason = StatusPartial, err, err.Error()
		return out, err
	}
	cp, err := st.OpenCheckpoint(wctx, jobID, r.deps.Holder, state.CheckpointOptions{Interval: r.deps.CheckpointInterval})
	if err != nil {
		out.Status, out.Err, out.Reason = StatusPartial, err, err.Error()
		return out, err
	}
	t := r.track(cp, cancel)
	out.Phase = t.cur.Phase

	if t.cur.Notes[NoteGated] != r.primary && r.gateNeeded(d) {
		t.phaseStart(PhaseGate, r.deps.Clock.Now())
		ev, err := r.gate(sctx)
		if err != nil {
			return r.gateFailed(sctx, out, err), nil
		}
		t.phaseEnd(PhaseGate, r.deps.Clock.Now())
		out.Adoption = ev
		t.note(NoteGated, r.primary)
		t.note(NoteProved, strconv.FormatBool(ev.Direct))
		if b, err := json.Marshal(ev); err == nil {
			t.note(NoteAdoption, string(b))
		}
	}
	defer func() { t.fill(&out) }()
	if rot != nil {
		rot.ProvedBefore = t.cur.Notes[NoteProved] == "true"
	}
	strategy := d.Strategy
	if s := t.cur.Notes[NoteStrategy]; s != "" && t.cur.Phase == state.PhasePass && !t.start() {
		strategy = reencrypt.Strategy(s)
	}
	t.note(NoteStrategy, string(strategy))

	if t.cur.Phase == state.PhasePass {
		t.phaseStart(string(state.PhasePass), r.deps.Clock.Now())
		s, err := r.resumable(wctx, t, strategy, margin, true)
		out.Summary = &s
		if err != nil {
			return r.interrupted(ctx, wctx, t, out, err)
		}
		total := t.base.Plus(s.Total)
		if total.Failed > 0 {
			t.restart(state.PhasePass)
			out.Status, out.Reason = StatusFailed, fmt.Sprintf("%d objects failed in the pass; the job starts over on its next invocation", total.Failed)
			return r.settle(ctx, t, out)
		}
		v := r.judge(sctx, strategy, total, &d, rot)
		out.Verdict = &v
		if v.Suspicious() {
			t.restart(state.PhasePass)
			out.Status, out.Reason = StatusSuspicious, v.Message
			return r.settle(ctx, t, out)
		}
		b, _ := json.Marshal(total)
		t.phaseEnd(string(state.PhasePass), r.deps.Clock.Now())
		t.startPhase(state.PhaseConvergence)
		t.note(NotePass, string(b))
		if err := t.flush(wctx); err != nil {
			return r.interrupted(ctx, wctx, t, out, err)
		}
		r.log.Info().Int64("rewritten", total.Rewritten).Int64("listed", total.Listed).Msg("pass complete; convergence next")
	}

	for restarts := 0; t.cur.Notes[NoteConverged] != "true"; {
		t.phaseStart(string(state.PhaseConvergence), r.deps.Clock.Now())
		s, err := r.resumable(wctx, t, reencrypt.Rewrite, margin, false)
		out.Convergence = &s
		routes := t.addRoutes(s.Routes)
		// Rewrites counted before this engine run (an invocation killed mid-pass) count too.
		rewritten := t.base.Rewritten + s.Total.Rewritten
		again := ""
		if rewritten > 0 {
			// Convergence is one full pass that rewrote nothing: this one is not.
			again = fmt.Sprintf("the convergence pass rewrote %d objects%s", rewritten, byReplica(routes))
		} else if err == nil && s.Total.Failed+t.base.Failed == 0 {
			// A clean pass proves convergence only on the replicas that served it.
			again = r.uncovered(routes)
		}
		if again != "" {
			restarts++
			r.say(false, "%s: starting it again from the top", again)
			t.startPhase(state.PhaseConvergence)
			if err == nil && restarts >= maxConvergenceRestarts {
				err = fmt.Errorf("%w: %s (%d times in a row)", reencrypt.ErrStopped, again, restarts)
			}
		}
		if err != nil {
			return r.interrupted(ctx, wctx, t, out, err)
		}
		if again != "" {
			continue
		}
		total := t.base.Plus(s.Total)
		if total.Failed > 0 {
			t.restart(state.PhasePass)
			out.Status, out.Reason = StatusFailed, fmt.Sprintf("%d objects failed in the convergence pass; the job starts over on its next invocation", total.Failed)
			return r.settle(ctx, t, out)
		}
		t.complete(total)
		t.phaseEnd(string(state.PhaseConvergence), r.deps.Clock.Now())
		if err := t.flush(wctx); err != nil {
			return r.interrupted(ctx, wctx, t, out, err)
		}
	}

	if err := sctx.Err(); err != nil {
		return r.interrupted(ctx, wctx, t, out, context.Cause(sctx))
	}
	conv := &reencrypt.Summary{Strategy: reencrypt.Rewrite, Complete: true, Total: t.cur.Counts,
		Resources: []reencrypt.ResourceSummary{{Resource: "all", Counts: t.cur.Counts}}, Routes: t.routes()}
	t.phaseStart(PhaseVerifier, r.deps.Clock.Now())
	report, err := r.verifier(sctx, conv)
	t.phaseEnd(PhaseVerifier, r.deps.Clock.Now())
	if err != nil {
		if sctx.Err() != nil {
			return r.interrupted(ctx, wctx, t, out, context.Cause(sctx))
		}
		o, err := verifierFailed(out, err)
		o.Checkpoint, o.Phase = t.snapshot(), t.cur.Phase
		return o, err
	}
	out.Verify = &report
	switch {
	case report.Verdict == verify.Unknown:
		// Nothing was disproved: keep the converged pass and check again next time.
		out.Status = StatusPartial
		out.Reason = "the verifier could not check everything (" + strings.Join(report.Reasons, "; ") +
			"); the next invocation runs the verifier again, keeping the converged pass"
		return r.settle(ctx, t, out)
	case report.Verdict != verify.Pass && len(verifyFailedLayers(report)) == 0:
		// No layer failed, but nothing proves the result (no evidence): running the passes again
		// would prove no more. The converged pass is kept; the job is failed until the evidence
		// is there (grant what the report names).
		out.Status = StatusFailed
		out.Reason = "the verifier FAILs: " + strings.Join(report.Reasons, "; ") + "; the converged pass is kept"
		return r.settle(ctx, t, out)
	case report.Verdict != verify.Pass:
		t.fill(&out) // what this run of the job did, before the restart forgets it
		t.restart(state.PhasePass)
		out.Status, out.Reason = StatusFailed, "the verifier FAILs: "+verifyProblems(report)+"; the job starts over on its next invocation"
		return r.settle(ctx, t, out)
	}
	if r.spec.KeyID != "" {
		job := state.JobRecord{Job: policy.Job{Cluster: st.Cluster(), Key: r.spec.KeyID, Version: r.spec.Version, Reason: r.spec.Reason}, ID: jobID}
		if _, err := st.Complete(wctx, job, r.primary); err != nil {
			out.Status, out.Err, out.Reason = StatusPartial, err, err.Error()
			return out, fmt.Errorf("record the verified version: %w", err)
		}
		out.VerifiedVersion = r.primary
	} else if err := st.DeleteCheckpoint(wctx, jobID); err != nil {
		out.Status, out.Err, out.Reason = StatusPartial, err, err.Error()
		return out, err
	}
	out.Status, out.Phase = StatusDone, state.PhaseConvergence
	out.Reason = fmt.Sprintf("every object re-encrypted and verified (%s)", orNone(r.primary))
	r.log.Info().Str("job", jobID).Str("version", r.primary).Msg("job done")
	return out, nil
}

func orNone(v string) string {
	if v == "" {
		return "no key"
	}
	return "key version " + v
}

// margin is the stop margin of a checkpointed job: Deps.StopMargin, or DefaultStopMargin capped
// at a third of the time left.
func (r *runner) margin(ctx context.Context) time.Duration {
	if r.deps.StopMargin > 0 {
		return r.deps.StopMargin
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return min(DefaultStopMargin, time.Until(dl)/3)
}

// renew renews the Lease every third of its duration until the returned stop is called; losing it
// cancels the job with the cause.
func (r *runner) renew(ctx context.Context, lease *state.Lease, cancel context.CancelCauseFunc) (stop func()) {
	tk := r.deps.Clock.NewTicker(r.deps.LeaseDuration / 3)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// A panic here must not take the process down; the job stops, since its Lease is no
		// longer renewed.
		defer panics.Recover("lease renewal", func(e *panics.Error) {
			r.log.Error().Str("panic", e.Value).Str("stack", string(e.Stack)).Msg("the lease renewal panicked; stopping the job")
			cancel(e)
		})
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tk.C():
				if err := lease.Renew(ctx); err != nil {
					if errors.Is(err, state.ErrLeaseLost) {
						r.log.Warn().Err(err).Msg("lost the run lease; stopping")
						cancel(err)
						return
					}
					r.log.Warn().Err(err).Msg("renew the run lease")
				}
			}
		}
	}()
	return func() {
		close(done)
		tk.Stop()
		wg.Wait()
	}
}

// resumable runs one engine pass from the checkpoint's position, saving the checkpoint as pages
// complete. withHooks passes the progress callbacks (the main pass only).
func (r *runner) resumable(ctx context.Context, t *tracker, strategy reencrypt.Strategy, margin time.Duration, withHooks bool) (reencrypt.Summary, error) {
	pos := t.position()
	e, err := r.engine(strategy, func(o *reencrypt.Options) {
		o.Resume, o.OnPage, o.StopMargin = &pos, t.onPage(ctx), margin
		if withHooks {
			o.OnListed, o.OnObject = r.deps.OnListed, r.deps.OnObject
		}
	})
	if err != nil {
		return reencrypt.Summary{}, err
	}
	r.log.Info().Str("phase", string(t.cur.Phase)).Str("strategy", string(strategy)).Str("resource", pos.Resource).
		Str("namespace", pos.Namespace).Bool("resumed", !pos.IsStart()).Msg("pass starting")
	wctx, stopWatch := r.watchKey(ctx) // keywatch.go: a key disabled mid-pass stops it at once
	defer stopWatch()
	s, err := e.Run(wctx)
	t.mu.Lock()
	t.ran, t.last, t.lastErr = true, s, err
	t.mu.Unlock()
	return s, err
}

// interrupted ends an invocation that stopped: it flushes the checkpoint (unless another holder
// took the job over) and classifies the cause.
func (r *runner) interrupted(ctx, wctx context.Context, t *tracker, out Outcome, err error) (Outcome, error) {
	if cause := context.Cause(wctx); cause != nil && (errors.Is(cause, state.ErrLeaseLost) || errors.Is(cause, state.ErrCheckpointTaken)) {
		err = cause
	}
	if errors.Is(err, state.ErrLeaseLost) || errors.Is(err, state.ErrCheckpointTaken) {
		out.Status, out.Err, out.Reason = StatusBusy, err, "another invocation took the job over: "+err.Error()
		return out, nil
	}
	out, retErr := stopped(out, err)
	var se *SpecError
	if errors.As(err, &se) {
		out.Status = StatusFailed
	}
	if out.Status == StatusPartial {
		out.NoProgress, out.Stalled = t.progress(err)
		if out.NoProgress != "" {
			r.log.Warn().Str("job", out.Job).Int("stalled", out.Stalled).Msg("no progress in this invocation: " + out.NoProgress)
		}
	}
	o, ferr := r.settle(ctx, t, out)
	if ferr != nil {
		return o, ferr
	}
	if o.Status == StatusPartial && retErr == nil {
		o.Reason = fmt.Sprintf("stopped before the deadline in phase %s; the next invocation resumes from the checkpoint (%s)", t.cur.Phase, err)
		if o.NoProgress != "" {
			o.Reason = fmt.Sprintf("stopped before the deadline in phase %s without progress (%d invocations in a row): %s", t.cur.Phase, o.Stalled, o.NoProgress)
		}
	}
	return o, retErr
}

// settle flushes the checkpoint at the end of an invocation, with a context of its own (ctx may
// have ended), and puts it in the outcome.
func (r *runner) settle(ctx context.Context, t *tracker, out Outcome) (Outcome, error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if err := t.flush(fctx); err != nil {
		if errors.Is(err, state.ErrCheckpointTaken) {
			out.Status, out.Err, out.Reason = StatusBusy, err, "another invocation took the job over: "+err.Error()
			return out, nil
		}
		return out, fmt.Errorf("save the checkpoint: %w", err)
	}
	out.Checkpoint, out.Phase = t.snapshot(), t.cur.Phase
	return out, nil
}

// tracker keeps this invocation's view of the job's checkpoint.
type tracker struct {
	r      *runner
	cp     *state.Checkpointer
	cancel context.CancelCauseFunc

	mu   sync.Mutex
	cur  state.Checkpoint
	base reencrypt.Counts // the phase's counts before the current engine run

	// from is where the job stood when this invocation started; last is the last engine run of
	// this invocation (ran: there was one), for telling whether the invocation made progress.
	from    state.Checkpoint
	ran     bool
	last    reencrypt.Summary
	lastErr error
}

// track loads the checkpoint, or starts one: when there is none, or it is for another primary
// version (the key rotated again since), the job starts over with a pass.
func (r *runner) track(cp *state.Checkpointer, cancel context.CancelCauseFunc) *tracker {
	t := &tracker{r: r, cp: cp, cancel: cancel}
	loaded, found := cp.Loaded()
	if found && loaded.Notes[NotePrimary] == r.primary && (loaded.Phase == state.PhasePass || loaded.Phase == state.PhaseConvergence) {
		t.cur = loaded
		t.cur.Notes = maps.Clone(loaded.Notes)
		if t.cur.Notes == nil {
			t.cur.Notes = map[string]string{}
		}
		t.cur.Invocations++
		t.base = loaded.Counts
		t.from = loaded
		r.log.Info().Str("phase", string(loaded.Phase)).Str("resource", loaded.Resource).Str("namespace", loaded.Namespace).
			Int64("done", loaded.Counts.Done()).Int("invocations", loaded.Invocations).Str("holder", loaded.Holder).Msg("resuming from the checkpoint")
		return t
	}
	if found {
		r.log.Info().Str("checkpointPrimary", loaded.Notes[NotePrimary]).Str("primary", r.primary).Msg("the checkpoint is for another key version; starting over")
	}
	t.cur = state.Checkpoint{Phase: state.PhasePass, Notes: map[string]string{NotePrimary: r.primary}, Invocations: 1}
	if found {
		t.cur.Stalled = loaded.Stalled
	}
	t.from = t.cur
	return t
}

// progress tells whether this invocation moved the job forward, once it stopped with err: the
// phase changed, or the checkpoint's position or done count moved. When it did not (and an engine
// pass ran), it returns why, and the invocations in a row that made none (kept in the checkpoint);
// otherwise "" and 0, and the count starts again.
func (t *tracker) progress(err error) (reason string, stalled int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	moved := t.cur.Phase != t.from.Phase || t.cur.Resource != t.from.Resource || t.cur.Namespace != t.from.Namespace ||
		t.cur.Continue != t.from.Continue || t.cur.After != t.from.After || t.cur.Counts.Done() != t.from.Counts.Done() ||
		t.cur.Notes[NoteConverged] != t.from.Notes[NoteConverged]
	if moved || !t.ran {
		t.cur.Stalled = 0
		return "", 0
	}
	t.cur.Stalled = t.from.Stalled + 1
	s := t.last
	switch {
	case s.Total.Done() > 0:
		reason = fmt.Sprintf("%d objects reached an outcome, but not the first one listed after the checkpoint, so nothing could be saved", s.Total.Done())
	case s.Retries > 0 || (t.lastErr != nil && !errors.Is(t.lastErr, reencrypt.ErrStopped)):
		reason = fmt.Sprintf("the API server did not answer one patch (%d retries): %v", s.Retries, err)
	default:
		reason = fmt.Sprintf("the time left before the deadline was too short to patch one object (%v)", err)
	}
	return reason, t.cur.Stalled
}

// start reports whether the phase starts from the top in this invocation.
func (t *tracker) start() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur.Resource == "" && t.cur.Continue == "" && t.cur.After == "" && t.cur.Counts == (reencrypt.Counts{})
}

func (t *tracker) note(k, v string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur.Notes[k] = v
}

func (t *tracker) position() reencrypt.Position {
	t.mu.Lock()
	defer t.mu.Unlock()
	return reencrypt.Position{Resource: t.cur.Resource, Namespace: t.cur.Namespace, Continue: t.cur.Continue, After: t.cur.After}
}

// startPhase starts phase from the top, keeping the notes that hold across phases.
func (t *tracker) startPhase(p state.Phase) {
	t.mu.Lock()
	defer t.mu.Unlock()
	notes := maps.Clone(t.cur.Notes)
	delete(notes, NoteConverged)
	delete(notes, NoteRoutes)
	if p == state.PhasePass {
		delete(notes, NotePass)
		delete(notes, NotePhases)
	}
	t.cur = state.Checkpoint{Phase: p, Notes: notes, Invocations: 1}
	t.base = reencrypt.Counts{}
}

// restart starts the job over from phase (its next invocation does), with a strategy decided anew
// and, from the pass, the adoption gate run again: what made the job start over may be an API
// server replica that had not adopted the key version after all.
func (t *tracker) restart(p state.Phase) {
	t.startPhase(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.cur.Notes, NoteStrategy)
	if p == state.PhasePass {
		delete(t.cur.Notes, NoteGated)
		delete(t.cur.Notes, NoteProved)
		delete(t.cur.Notes, NoteAdoption)
	}
}

// phaseStart notes when phase first started (kept across invocations and restarts of the phase).
func (t *tracker) phaseStart(phase string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := decodePhases(t.cur.Notes[NotePhases])
	for _, p := range ps {
		if p.Name == phase {
			return
		}
	}
	ps = append(ps, PhaseTime{Name: phase, StartedAt: at})
	b, _ := json.Marshal(ps)
	t.cur.Notes[NotePhases] = string(b)
}

// phaseEnd notes when phase ended (the last time).
func (t *tracker) phaseEnd(phase string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := decodePhases(t.cur.Notes[NotePhases])
	for i := range ps {
		if ps[i].Name == phase {
			ps[i].EndedAt = at
		}
	}
	b, _ := json.Marshal(ps)
	t.cur.Notes[NotePhases] = string(b)
}

func decodePhases(s string) []PhaseTime {
	var out []PhaseTime
	if s != "" {
		_ = json.Unmarshal([]byte(s), &out) // a note rekey wrote; a bad one counts as none
	}
	return out
}

// fill puts into out what the checkpoint knows of the whole job: its phases, the finished pass's
// totals, and the adoption evidence found by an earlier invocation. What out already holds stays.
func (t *tracker) fill(out *Outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if out.Phases == nil {
		out.Phases = decodePhases(t.cur.Notes[NotePhases])
	}
	if s := t.cur.Notes[NotePass]; s != "" && out.PassTotal == nil {
		var c reencrypt.Counts
		if json.Unmarshal([]byte(s), &c) == nil {
			out.PassTotal = &c
		}
	}
	if out.Adoption == nil {
		if s := t.cur.Notes[NoteAdoption]; s != "" {
			var ev adoption.Evidence
			if json.Unmarshal([]byte(s), &ev) == nil {
				out.Adoption = &ev
			}
		}
	}
}

// addRoutes adds one engine run's per-route counts to the phase's (kept in the checkpoint, so a
// convergence pass spread over several invocations knows every replica that served it) and
// returns the phase's.
func (t *tracker) addRoutes(rs []reencrypt.RouteSummary) []reencrypt.RouteSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := decodeRoutes(t.cur.Notes[NoteRoutes])
	for _, r := range rs {
		i := slices.IndexFunc(all, func(a reencrypt.RouteSummary) bool { return a.Route == r.Route })
		if i < 0 {
			all = append(all, reencrypt.RouteSummary{Route: r.Route})
			i = len(all) - 1
		}
		all[i].Counts = all[i].Counts.Plus(r.Counts)
	}
	if len(all) > 0 {
		b, _ := json.Marshal(all)
		t.cur.Notes[NoteRoutes] = string(b)
	}
	return all
}

// routes returns the phase's per-route counts.
func (t *tracker) routes() []reencrypt.RouteSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	return decodeRoutes(t.cur.Notes[NoteRoutes])
}

func decodeRoutes(s string) []reencrypt.RouteSummary {
	var out []reencrypt.RouteSummary
	if s != "" {
		_ = json.Unmarshal([]byte(s), &out) // a note rekey wrote; a bad one counts as none
	}
	return out
}

// byReplica names the replicas that rewrote objects (" through API server replica(s) ..."), or "".
func byReplica(routes []reencrypt.RouteSummary) string {
	var parts []string
	for _, r := range routes {
		if r.Rewritten > 0 {
			parts = append(parts, fmt.Sprintf("%s (%d)", replicas.Short(r.Route), r.Rewritten))
		}
	}
	if len(parts) == 0 || len(parts) == len(routes) {
		return ""
	}
	return " through API server replica " + strings.Join(parts, ", ") + " only: it encrypts with another key version than the others"
}

// uncovered says why a clean convergence pass does not prove convergence on every replica: an
// expected replica served none of it ("" when it covers them all, or when the replicas are not
// known, or etcd gives storage evidence instead).
func (r *runner) uncovered(routes []reencrypt.RouteSummary) string {
	if r.deps.Etcd != nil || r.replicas == nil || !r.replicas.Known() {
		return ""
	}
	cov := verify.Coverage(reencrypt.Summary{Routes: routes, Total: reencrypt.Counts{Listed: 1}}, r.replicas)
	if len(cov.Missing) == 0 {
		return ""
	}
	short := make([]string, len(cov.Missing))
	for i, id := range cov.Missing {
		short[i] = replicas.Short(id)
	}
	return fmt.Sprintf("the convergence pass was served by %d of the %d API server replicas; not by %s", len(cov.Covered), cov.Expected, strings.Join(short, ", "))
}

// complete records a convergence pass that completed with total and rewrote nothing.
func (t *tracker) complete(total reencrypt.Counts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur.Resource, t.cur.Namespace, t.cur.Continue, t.cur.After = "", "", "", ""
	t.cur.Counts, t.base = total, total
	t.cur.Notes[NoteConverged] = "true"
}

func (t *tracker) snapshot() *state.Checkpoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	cp := t.cur
	cp.Notes = maps.Clone(t.cur.Notes)
	return &cp
}

// onPage returns the engine's OnPage: it moves the checkpoint to the position and saves it at the
// Checkpointer's bounded rate. Another holder's checkpoint stops the job.
func (t *tracker) onPage(ctx context.Context) func(reencrypt.Position, reencrypt.Counts) {
	return func(next reencrypt.Position, done reencrypt.Counts) {
		t.mu.Lock()
		t.cur.Resource, t.cur.Namespace, t.cur.Continue, t.cur.After = next.Resource, next.Namespace, next.Continue, next.After
		t.cur.Counts = t.base.Plus(done)
		t.cur.Stalled = 0 // the checkpoint moved
		t.mu.Unlock()
		if _, err := t.cp.Save(ctx, *t.snapshot()); err != nil {
			if errors.Is(err, state.ErrCheckpointTaken) {
				t.cancel(err)
				return
			}
			t.r.log.Warn().Err(err).Msg("save the checkpoint")
		}
	}
}

// flush writes the checkpoint now.
func (t *tracker) flush(ctx context.Context) error {
	return t.cp.Flush(ctx, *t.snapshot())
}
