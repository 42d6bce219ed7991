package job

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/verify"
)

// flakyTrail answers LookupEvents with err while set, then with one Encrypt by the managed role.
type flakyTrail struct {
	err     error
	version string
	calls   int
}

func (f *flakyTrail) LookupEvents(_ context.Context, q actiontrail.Query) (actiontrail.Result, error) {
	f.calls++
	if f.err != nil {
		return actiontrail.Result{}, f.err
	}
	ev := actiontrail.Event{EventName: "Encrypt", EventTime: q.End.Format("2006-01-02T15:04:05Z"), ResponseElements: map[string]any{"KeyVersionId": f.version},
		UserIdentity: actiontrail.Identity{Type: "assumed-role", Session: &actiontrail.SessionContext{}}}
	ev.UserIdentity.Session.SessionIssuer.UserName = verify.DefaultAuditRole
	return actiontrail.Result{Events: []actiontrail.Event{ev}, Pages: 1}, nil
}

// TestCouldNotCheckKeepsTheConvergedPass: the verifier's audit layer throttled at the end of a
// job: the job is partial, not failed, and not started over; the next invocation runs only the
// verifier (no list of any pass) and is done.
func TestCouldNotCheckKeepsTheConvergedPass(t *testing.T) {
	f := newFixture(t, 30)
	trail := &flakyTrail{err: alicloud.NewAPIError(400, "Throttling.User", "Request was denied due to user flow control."), version: f.primary}
	deps := f.deps("inv-1")
	deps.Trail = trail
	out := mustRun(t, context.Background(), f.spec(), deps)
	if out.Status != StatusPartial || out.Verify == nil || out.Verify.Verdict != verify.Unknown || !strings.Contains(out.Reason, "could not check") {
		t.Fatalf("first invocation: %s %q, want partial with the verifier UNKNOWN", out.Status, out.Reason)
	}
	cp, found, err := f.store.LoadCheckpoint(context.Background(), f.jobID())
	if err != nil || !found || cp.Notes[NoteConverged] != "true" {
		t.Fatalf("checkpoint %+v (found %v, %v): want the converged pass kept", cp, found, err)
	}
	lists := len(f.api.listTokens())
	trail.err = nil
	deps = f.deps("inv-2")
	deps.Trail = trail
	out = mustRun(t, context.Background(), f.spec(), deps)
	if out.Status != StatusDone || out.VerifiedVersion != f.primary {
		t.Fatalf("second invocation: %s %q, want done", out.Status, out.Reason)
	}
	if got := len(f.api.listTokens()); got != lists || out.Summary != nil || out.Convergence != nil {
		t.Fatalf("the second invocation listed %d times (pass %v, convergence %v): want the verifier only", got-lists, out.Summary != nil, out.Convergence != nil)
	}
	if out.Verify.Layer(verify.LayerAudit).Status != verify.Pass || trail.calls != 2 {
		t.Fatalf("audit layer %+v after %d lookups", out.Verify.Layer(verify.LayerAudit), trail.calls)
	}
}

// TestBaselineJobIsNotSuspicious: the first job of a cluster finds every object current and
// rewrites none: that is the expected result of a baseline, not a suspicious pass; the same pass
// after a known rotation is suspicious (and the gate will run again after the restart).
func TestBaselineJobIsNotSuspicious(t *testing.T) {
	f := newFixture(t, 20)
	f.api.mu.Lock()
	for k := range f.api.stale {
		f.api.stale[k] = false
	}
	f.api.mu.Unlock()
	spec := f.spec()
	spec.Baseline = true
	out := mustRun(t, context.Background(), spec, f.deps("baseline"))
	if out.Status != StatusDone || out.VerifiedVersion != f.primary || (out.Verdict != nil && out.Verdict.Suspicious()) {
		t.Fatalf("baseline: %s %q, want done and not suspicious", out.Status, out.Reason)
	}

	g := newFixture(t, 20)
	g.api.mu.Lock()
	for k := range g.api.stale {
		g.api.stale[k] = false
	}
	g.api.mu.Unlock()
	out = mustRun(t, context.Background(), g.spec(), g.deps("after-rotation"))
	if out.Status != StatusSuspicious {
		t.Fatalf("after a rotation: %s %q, want suspicious", out.Status, out.Reason)
	}
	cp, _, err := g.store.LoadCheckpoint(context.Background(), g.jobID())
	if err != nil || cp.Phase != state.PhasePass || cp.Notes[NoteGated] != "" {
		t.Fatalf("checkpoint after a suspicious pass %+v (%v): want the pass next, the gate not marked done", cp, err)
	}
}

// TestResumedConvergenceCountsRewritesBeforeTheKill: an invocation killed in the middle of the
// convergence pass had counted rewrites (saved in the checkpoint); the next one resumes, rewrites
// nothing more, and must still start convergence over: the pass as a whole rewrote objects.
func TestResumedConvergenceCountsRewritesBeforeTheKill(t *testing.T) {
	f := newFixture(t, 100)
	f.api.mu.Lock()
	for k := range f.api.stale {
		f.api.stale[k] = false
	}
	f.api.mu.Unlock()
	notes := map[string]string{NotePrimary: f.primary, NoteGated: f.primary, NoteProved: "true", NoteStrategy: "rewrite", NotePass: `{"listed":100,"rewritten":100}`}
	f.seed(t, state.Checkpoint{Phase: state.PhaseConvergence, Resource: "secrets", Continue: "a/s-0060",
		Counts: reencrypt.Counts{Listed: 60, Current: 57, Rewritten: 3}, Notes: notes})
	out := mustRun(t, context.Background(), f.spec(), f.deps("inv-2"))
	if out.Status != StatusDone {
		t.Fatalf("outcome %s %q", out.Status, out.Reason)
	}
	tokens := f.api.listTokens()
	if len(tokens) < 2 || tokens[0] != "a/s-0060" || !strings.Contains(f.says.joined(), "rewrote 3 objects") {
		t.Fatalf("lists %q, says %q: want the resumed convergence, then a restart for the 3 rewrites before the kill", tokens, f.says.joined())
	}
	if out.Convergence == nil || out.Convergence.Total.Listed != 100 || out.Convergence.Total.Rewritten != 0 {
		t.Fatalf("final convergence %+v, want a full clean pass of 100", out.Convergence)
	}
}

// TestNoEvidenceIsFailedWithoutStartingOver: a converged pass whose replicas cannot be counted
// (the identity may not list Leases) proves nothing; the job fails naming why, and keeps the
// converged pass instead of running everything again.
func TestNoEvidenceIsFailedWithoutStartingOver(t *testing.T) {
	f := newFixture(t, 20)
	f.api.noLeases = true
	out := mustRun(t, context.Background(), f.spec(), f.deps("inv-1"))
	if out.Status != StatusFailed || !strings.Contains(out.Reason, "no evidence") || !strings.Contains(out.Reason, "converged pass is kept") {
		t.Fatalf("outcome %s %q", out.Status, out.Reason)
	}
	if l := out.Verify.Layer(verify.LayerConvergence); l.Status != verify.Warn || !strings.Contains(strings.Join(l.Reasons, " "), "not known") {
		t.Fatalf("convergence layer %+v", l)
	}
	cp, _, err := f.store.LoadCheckpoint(context.Background(), f.jobID())
	if err != nil || cp.Notes[NoteConverged] != "true" {
		t.Fatalf("checkpoint %+v (%v): want the converged pass kept", cp, err)
	}
	if errors.Is(out.Err, context.Canceled) {
		t.Fatal("unexpected cancel")
	}
}
