package job

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/verify"
)

const (
	testCluster = "c-test"
	testKey     = "key-1"
)

// fixture is one cluster with a key rotated to v2 and its state in a fake clientset.
type fixture struct {
	api     *fakeCluster
	kms     *kmsfake.Fake
	store   *state.Store
	primary string
	says    *sayings
}

type sayings struct {
	mu   sync.Mutex
	msgs []string
}

func (s *sayings) say(m string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
}

func (s *sayings) joined() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.msgs, "\n")
}

func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	k := kmsfake.New()
	k.CreateKey(testKey)
	primary := k.Rotate(testKey)
	st, err := state.New(rvClient(), testCluster)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{api: newFakeCluster(t, n), kms: k, store: st, primary: primary, says: &sayings{}}
}

func (f *fixture) spec() Spec {
	return Spec{Cluster: testCluster, KeyID: testKey, Strategy: reencrypt.Rewrite, PageSize: 20, Concurrency: 4, Reason: "test"}
}

func (f *fixture) deps(holder string) Deps {
	return Deps{Rest: f.api.rest(), KMS: f.kms, State: f.store, Holder: holder, Adoption: Adoption{Mode: adoption.Off}, Say: f.says.say}
}

func (f *fixture) jobID() string { return state.JobID(testCluster, testKey, "") }

func mustRun(t *testing.T, ctx context.Context, spec Spec, deps Deps) Outcome {
	t.Helper()
	out, err := Run(ctx, spec, deps)
	if err != nil {
		t.Fatalf("Run: %v (outcome %s: %s)", err, out.Status, out.Reason)
	}
	return out
}

// TestGuardRefusesUnusableKey: a Disabled or PendingDeletion key is refused before anything
// touches the cluster; Force runs anyway with a warning.
func TestGuardRefusesUnusableKey(t *testing.T) {
	for _, keyState := range []string{kms.KeyStateDisabled, kms.KeyStatePendingDeletion} {
		t.Run(keyState, func(t *testing.T) {
			f := newFixture(t, 10)
			f.kms.SetState(testKey, keyState)
			out := mustRun(t, context.Background(), f.spec(), f.deps("inv-1"))
			if out.Status != StatusRefused || !strings.Contains(out.Reason, keyState) {
				t.Fatalf("outcome %s %q, want refused naming %s", out.Status, out.Reason, keyState)
			}
			if len(f.api.listTokens()) != 0 || f.api.patchCount() != 0 {
				t.Fatal("a refused job touched the cluster")
			}
		})
	}
	f := newFixture(t, 10)
	f.kms.SetState(testKey, kms.KeyStateDisabled)
	spec := f.spec()
	spec.Force, spec.SkipVerify = true, true
	deps := f.deps("")
	deps.State = nil
	out := mustRun(t, context.Background(), spec, deps)
	if out.Summary == nil || out.Summary.Total.Rewritten != 10 || !strings.Contains(f.says.joined(), "running anyway (--force)") {
		t.Fatalf("forced: %s %q, says %q", out.Status, out.Reason, f.says.joined())
	}
}

// TestBusyLease: another live holder has the cluster's Lease: the job is busy, not an error, and
// touches nothing.
func TestBusyLease(t *testing.T) {
	f := newFixture(t, 10)
	if _, ok, err := f.store.TryAcquire(context.Background(), "someone-else", time.Minute); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	out := mustRun(t, context.Background(), f.spec(), f.deps("inv-1"))
	if out.Status != StatusBusy || out.Lease == nil || out.Lease.Holder != "someone-else" {
		t.Fatalf("outcome %s %q lease %+v, want busy held by someone-else", out.Status, out.Reason, out.Lease)
	}
	if len(f.api.listTokens()) != 0 {
		t.Fatal("a busy job listed objects")
	}
}

// TestDeadlineLeavesACheckpoint: StopMargin before the deadline the job stops taking work and
// returns partial; the checkpoint is stored with the position after which nothing is stale, the
// Lease is released, and the next invocation resumes from the token and finishes: done, verified,
// recorded.
func TestDeadlineLeavesACheckpoint(t *testing.T) {
	f := newFixture(t, 400)
	f.api.setPatchDelay(5 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	deps := f.deps("inv-1")
	deps.StopMargin = 3*time.Second - 400*time.Millisecond
	spec := f.spec()
	spec.Concurrency = 2
	out := mustRun(t, ctx, spec, deps)
	if out.Status != StatusPartial || out.Summary == nil || out.Summary.Complete || out.Summary.Total.Failed != 0 {
		t.Fatalf("first invocation: %s %q summary %+v, want partial", out.Status, out.Reason, out.Summary)
	}
	cp, found, err := f.store.LoadCheckpoint(context.Background(), f.jobID())
	if err != nil || !found {
		t.Fatalf("no checkpoint after the deadline: %v", err)
	}
	if cp.Phase != state.PhasePass || (cp.Continue == "" && cp.After == "") || cp.Holder != "inv-1" || cp.Counts.Done() == 0 || cp.Notes[NotePrimary] != f.primary {
		t.Fatalf("checkpoint %+v", cp)
	}
	// The position is safe: every object before it is no longer stale (the fake's continue token
	// is the next key; After is the last key done in the page listed from it).
	f.api.mu.Lock()
	for k, stale := range f.api.stale {
		if (k < cp.Continue || (cp.After != "" && k <= cp.After)) && stale {
			f.api.mu.Unlock()
			t.Fatalf("%s is before the checkpoint %q/%q but still stale", k, cp.Continue, cp.After)
		}
	}
	f.api.mu.Unlock()
	probe, ok, err := f.store.TryAcquire(context.Background(), "probe", time.Minute)
	if err != nil || !ok {
		t.Fatalf("the Lease was not released: %v %v", ok, err)
	}
	if err := probe.Release(context.Background()); err != nil {
		t.Fatal(err)
	}

	f.api.setPatchDelay(0)
	before := len(f.api.listTokens())
	out = mustRun(t, context.Background(), f.spec(), f.deps("inv-2"))
	if out.Status != StatusDone || out.VerifiedVersion != f.primary {
		t.Fatalf("second invocation: %s %q, want done with %s", out.Status, out.Reason, f.primary)
	}
	if tokens := f.api.listTokens(); tokens[before] != cp.Continue {
		t.Fatalf("the second invocation listed from %q, want the checkpoint's %q", tokens[before], cp.Continue)
	}
	if out.Summary.Total.Listed+cp.Counts.Listed != 400 || f.api.staleCount() != 0 {
		t.Fatalf("second pass listed %d after %d: want 400 between them, none stale (%d)", out.Summary.Total.Listed, cp.Counts.Listed, f.api.staleCount())
	}
	if out.Verify == nil || out.Verify.Verdict != verify.Pass || out.Verify.Layer(verify.LayerConvergence).Status != verify.Pass {
		t.Fatalf("verify %+v", out.Verify)
	}
	verified, err := f.store.VerifiedVersions(context.Background())
	if err != nil || len(verified) != 1 || verified[0].Version != f.primary {
		t.Fatalf("verified versions %+v %v", verified, err)
	}
	if _, found, _ := f.store.LoadCheckpoint(context.Background(), f.jobID()); found {
		t.Fatal("the checkpoint survived the job")
	}
}

// TestEveryInvocationMovesTheCheckpoint: pages much longer than an invocation (a page of 200 at
// 20 ms a patch and 2 in flight is ~2 s; each invocation has ~0.6 s of work): every invocation
// moves the checkpoint inside the page and none reports no progress; the job finishes.
func TestEveryInvocationMovesTheCheckpoint(t *testing.T) {
	f := newFixture(t, 200)
	f.api.setPatchDelay(20 * time.Millisecond)
	spec := f.spec()
	spec.Concurrency, spec.PageSize = 2, 200
	var prev int64
	for i := 1; ; i++ {
		if i > 30 {
			t.Fatal("the job did not finish in 30 invocations")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
		deps := f.deps(fmt.Sprintf("inv-%d", i))
		deps.StopMargin = 600 * time.Millisecond
		out := mustRun(t, ctx, spec, deps)
		cancel()
		if out.Status == StatusDone {
			if i < 3 {
				t.Fatalf("done after %d invocations: the deadline did not bite", i)
			}
			break
		}
		if out.Status != StatusPartial || out.NoProgress != "" || out.Stalled != 0 || out.Checkpoint == nil {
			t.Fatalf("invocation %d: %s %q (no progress %q, stalled %d)", i, out.Status, out.Reason, out.NoProgress, out.Stalled)
		}
		done := out.Checkpoint.Counts.Done()
		if out.Checkpoint.Phase == state.PhasePass && done <= prev {
			t.Fatalf("invocation %d: the checkpoint did not move (%d done, %d before)", i, done, prev)
		}
		prev = done
		if out.Checkpoint.Phase != state.PhasePass {
			prev = 0
		}
	}
}

// TestInvocationsWithoutProgressSayWhy: when not one patch fits in an invocation (each takes
// longer than the time left), the invocation says it made no progress and why, and the count of
// such invocations in a row is kept in the checkpoint; an invocation that moves resets it.
func TestInvocationsWithoutProgressSayWhy(t *testing.T) {
	f := newFixture(t, 20)
	f.api.setPatchDelay(3 * time.Second)
	spec := f.spec()
	spec.Concurrency = 2
	for i := 1; i <= 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		deps := f.deps(fmt.Sprintf("slow-%d", i))
		deps.StopMargin = time.Second
		out := mustRun(t, ctx, spec, deps)
		cancel()
		if out.Status != StatusPartial || out.Stalled != i || !strings.Contains(out.NoProgress, "too short to patch one object") ||
			!strings.Contains(out.Reason, "without progress") {
			t.Fatalf("invocation %d: %s %q, no progress %q, stalled %d; want partial, no progress, stalled %d", i, out.Status, out.Reason, out.NoProgress, out.Stalled, i)
		}
		cp, _, err := f.store.LoadCheckpoint(context.Background(), f.jobID())
		if err != nil || cp.Stalled != i {
			t.Fatalf("checkpoint after invocation %d: stalled %d (%v), want %d", i, cp.Stalled, err, i)
		}
	}
	f.api.setPatchDelay(0)
	out := mustRun(t, context.Background(), spec, f.deps("fast"))
	if out.Status != StatusDone || out.NoProgress != "" || out.Stalled != 0 {
		t.Fatalf("fast invocation: %s %q, no progress %q, stalled %d", out.Status, out.Reason, out.NoProgress, out.Stalled)
	}
}

// seed stores a checkpoint as an earlier invocation would have.
func (f *fixture) seed(t *testing.T, cp state.Checkpoint) {
	t.Helper()
	c, err := f.store.OpenCheckpoint(context.Background(), f.jobID(), "earlier", state.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(context.Background(), cp); err != nil {
		t.Fatal(err)
	}
}

// TestResumedConvergenceThatRewritesRestarts: a convergence pass resumed from a checkpoint that
// rewrites an object is not a convergence pass: the job starts convergence again from the top,
// and that full pass, rewriting nothing, lets the job finish.
func TestResumedConvergenceThatRewritesRestarts(t *testing.T) {
	f := newFixture(t, 100)
	f.api.mu.Lock()
	for k := range f.api.stale {
		f.api.stale[k] = false // the pass is done
	}
	f.api.mu.Unlock()
	f.api.setStale("a/s-0070") // a stale object in the part of convergence still to do
	notes := map[string]string{NotePrimary: f.primary, NoteGated: f.primary, NoteProved: "true", NoteStrategy: "rewrite", NotePass: `{"listed":100,"rewritten":100}`}
	f.seed(t, state.Checkpoint{Phase: state.PhaseConvergence, Resource: "secrets", Continue: "a/s-0060", Counts: reencrypt.Counts{Listed: 60, Current: 60}, Notes: notes})

	out := mustRun(t, context.Background(), f.spec(), f.deps("inv-2"))
	if out.Status != StatusDone {
		t.Fatalf("outcome %s %q", out.Status, out.Reason)
	}
	tokens := f.api.listTokens()
	if len(tokens) < 2 || tokens[0] != "a/s-0060" {
		t.Fatalf("lists %q: want the resumed convergence first", tokens)
	}
	restarted := false
	for _, tok := range tokens[1:] {
		restarted = restarted || tok == ""
	}
	if !restarted || !strings.Contains(f.says.joined(), "starting it again from the top") {
		t.Fatalf("lists %q, says %q: want convergence restarted from the top", tokens, f.says.joined())
	}
	if out.Convergence == nil || out.Convergence.Total.Rewritten != 0 || out.Convergence.Total.Listed != 100 {
		t.Fatalf("final convergence pass %+v, want a full pass of 100 that rewrote nothing", out.Convergence)
	}
	if out.Summary != nil {
		t.Fatal("the pass ran again although the checkpoint was in convergence")
	}
}

// TestConvergenceRewriteInTheSameInvocationRestarts: the convergence pass right after the pass
// finds an object stale again (a lagging API server wrote it): it restarts, and the job is done
// only after a clean full pass.
func TestConvergenceRewriteInTheSameInvocationRestarts(t *testing.T) {
	f := newFixture(t, 60)
	fromTop := 0
	f.api.onList = func(cont string) {
		if cont == "" {
			fromTop++
			if fromTop == 2 { // the first convergence pass
				f.api.setStale("a/s-0030")
			}
		}
	}
	out := mustRun(t, context.Background(), f.spec(), f.deps("inv-1"))
	if out.Status != StatusDone || fromTop != 3 {
		t.Fatalf("outcome %s %q after %d lists from the top, want done after pass + 2 convergence passes", out.Status, out.Reason, fromTop)
	}
}

// TestLostCheckpointStopsTheJob: another holder writing the checkpoint while this one runs stops
// it (busy), and it does not overwrite that holder's checkpoint.
func TestLostCheckpointStopsTheJob(t *testing.T) {
	f := newFixture(t, 200)
	f.api.setPatchDelay(2 * time.Millisecond)
	var once sync.Once
	f.api.onList = func(cont string) {
		if cont != "" {
			once.Do(func() {
				// The job writes its checkpoint after every object here (interval 1ns): the
				// usurper reads it again until its write lands between two of the job's.
				var err error
				for range 50 {
					var c *state.Checkpointer
					c, err = f.store.OpenCheckpoint(context.Background(), f.jobID(), "usurper", state.CheckpointOptions{})
					if err == nil {
						err = c.Flush(context.Background(), state.Checkpoint{Phase: state.PhasePass, Continue: "a/s-0199", Notes: map[string]string{NotePrimary: f.primary}})
					}
					if !errors.Is(err, state.ErrCheckpointTaken) {
						break
					}
				}
				if err != nil {
					t.Errorf("usurp: %v", err)
				}
			})
		}
	}
	deps := f.deps("inv-1")
	deps.CheckpointInterval = time.Nanosecond
	out := mustRun(t, context.Background(), f.spec(), deps)
	if out.Status != StatusBusy {
		t.Fatalf("outcome %s %q, want busy", out.Status, out.Reason)
	}
	cp, _, _ := f.store.LoadCheckpoint(context.Background(), f.jobID())
	if cp.Holder != "usurper" {
		t.Fatalf("checkpoint holder %q, want the usurper's left intact", cp.Holder)
	}
}

// TestOnceWithVerifier: without State (the CLI), one pass, judged, then the verifier with its own
// convergence pass; done with the verified version.
func TestOnceWithVerifier(t *testing.T) {
	f := newFixture(t, 50)
	deps := f.deps("")
	deps.State = nil
	out := mustRun(t, context.Background(), f.spec(), deps)
	if out.Status != StatusDone || out.VerifiedVersion != f.primary || out.Summary.Total.Rewritten != 50 || out.Verdict == nil || out.Verdict.Suspicious() {
		t.Fatalf("outcome %s %q summary %+v verdict %+v", out.Status, out.Reason, out.Summary, out.Verdict)
	}
	if out.Verify == nil || out.Verify.Convergence == nil || out.Verify.Convergence.Total.Current != 50 || out.Verify.Layer(verify.LayerKMS).Status != verify.Pass {
		t.Fatalf("verify %+v", out.Verify)
	}
	if out.Checkpoint != nil || out.Job != "" {
		t.Fatal("a job without State reported a checkpoint")
	}
}

// TestPacingFollowsAPF: with rekey's FlowSchema in charge the limiter starts (and measures its
// baseline) at the full concurrency and the run says nothing; without it, for each reason, the run
// is bounded and says why once.
func TestPacingFollowsAPF(t *testing.T) {
	for _, tc := range []struct {
		name, header, rekeyUID string
		mode, said             string
	}{
		{"in charge", "fs-rekey", "fs-rekey", "apf: FlowSchema rekey in charge (priority level rekey)", ""},
		{"APF off", "", "", "bounded: the API server's answers carry no X-Kubernetes-PF-FlowSchema-UID header", "no X-Kubernetes-PF-FlowSchema-UID header"},
		{"missing", "fs-global-default", "", "bounded: FlowSchema rekey does not exist", "FlowSchema rekey does not exist: apply infra/apf/rekey-apf.yaml"},
		{"another first", "fs-exempt", "fs-rekey", "bounded: requests are classified by another FlowSchema (UID fs-exempt)", "another FlowSchema (UID fs-exempt)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 120)
			f.api.apfFlowSchema, f.api.flowSchemaRekey = tc.header, tc.rekeyUID
			deps := f.deps("")
			deps.State = nil
			spec := f.spec()
			spec.Concurrency = 32
			out := mustRun(t, context.Background(), spec, deps)
			p := out.Summary.Pace
			if out.Status != StatusDone || p == nil || !strings.HasPrefix(p.Mode, tc.mode) {
				t.Fatalf("outcome %s %q, pace %+v: want done with mode %q", out.Status, out.Reason, p, tc.mode)
			}
			wantMax, wantStart := 32, 32
			if tc.said != "" {
				wantMax, wantStart = 16, 8
			}
			if p.Max != 32 || p.Peak > wantMax || p.BaselineLimit != wantStart {
				t.Fatalf("pace %+v: want at most %d in flight, the baseline measured at %d", p, wantMax, wantStart)
			}
			said := f.says.joined()
			if n := strings.Count(said, "rekey paces itself instead"); (tc.said == "" && n != 0) || (tc.said != "" && (n != 1 || !strings.Contains(said, tc.said))) {
				t.Fatalf("said %q: want %q once", said, tc.said)
			}
		})
	}
}

// TestRetried429sSlowTheRunDown: 429s that client-go retries on its own (APF's queues full) never
// reach the engine as errors; the run's transport reports them to the limiter, which halves.
func TestRetried429sSlowTheRunDown(t *testing.T) {
	f := newFixture(t, 200)
	f.api.apfFlowSchema, f.api.flowSchemaRekey = "fs-rekey", "fs-rekey"
	f.api.tooMany = 5
	deps := f.deps("")
	deps.State = nil
	spec := f.spec()
	spec.Concurrency = 32
	out := mustRun(t, context.Background(), spec, deps)
	p := out.Summary.Pace
	if out.Status != StatusDone || out.Summary.Total.Failed != 0 || p == nil {
		t.Fatalf("outcome %s %q, summary %+v: want done without failures", out.Status, out.Reason, out.Summary)
	}
	if p.TooManyRequests != 5 || p.Decreases < 1 {
		t.Fatalf("pace %+v: want the 5 retried 429s counted and the limit cut", p)
	}
}
