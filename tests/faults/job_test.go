package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

// Function Compute cases: the rotation job (package job) as the functions run it, with its state,
// Lease and checkpoint in the cluster.

const (
	// fcCluster names the cluster's state.
	fcCluster = "c-faults"
	// shortDeadline is the invocation timeout of the deadline case: a fraction of what the job needs.
	shortDeadline = 3 * time.Second
	// crashedLease is the duration of the Lease the crashed invocation left behind.
	crashedLease = 8 * time.Second
)

// invocation is one simulated Function Compute invocation of the rotation job: its own clients, a
// deadline, the request ID as holder.
func (e *env) invocation(holder string, deadline time.Duration, version string) (job.Outcome, error, time.Duration) {
	e.t.Helper()
	kmsClient, err := e.st.Client(e.st.Admin)
	if err != nil {
		e.t.Fatal(err)
	}
	store, err := state.New(e.admin, fcCluster)
	if err != nil {
		e.t.Fatal(err)
	}
	logger := zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.WarnLevel)
	deps := job.Deps{
		Rest: e.c.RestConfig(controlplane.AdminUser), KMS: kmsClient, Etcd: e.c.Etcd, EtcdEndpoints: []string{e.c.EtcdEndpoint},
		State: store, Holder: holder, Logger: &logger, StopMargin: time.Second, CheckpointInterval: 500 * time.Millisecond,
		LeaseDuration: crashedLease, Adoption: job.Adoption{Mode: adoption.Auto},
	}
	spec := job.Spec{Cluster: fcCluster, KeyID: e.st.KeyID, Version: version, Reason: "CreateKeyVersion (fault suite)", Concurrency: 8, PageSize: 100}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	began := time.Now()
	out, err := job.Run(ctx, spec, deps)
	took := time.Since(began)
	cp := out.Checkpoint
	if cp == nil {
		cp = &state.Checkpoint{}
	}
	e.t.Logf("%s: %s in %s (%s); checkpoint phase %s, %d done", holder, out.Status, took.Round(time.Millisecond), short(out.Reason), cp.Phase, cp.Counts.Done())
	return out, err, took
}

// recordJob records the pending job the functions' event handler would have recorded.
func (e *env) recordJob(version string) {
	e.t.Helper()
	store, err := state.New(e.admin, fcCluster)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := store.AddJobs(context.Background(), policy.Job{Cluster: fcCluster, Key: e.st.KeyID, Version: version, Reason: "CreateKeyVersion (fault suite)", NotBefore: time.Now()}); err != nil {
		e.t.Fatal(err)
	}
}

// caseFunctions: (1) a Lease left by a crashed invocation: the next invocations are busy until it
// expires, then one takes over and finishes; (2) an invocation deadline far shorter than the job:
// invocations resume from the checkpoint until the job is done. The writer runs throughout.
func caseFunctions(t *testing.T, order int, tb *table) {
	e := newEnv(t, secretsPerCase, "fc")
	kc := e.kubeconfig()

	// (1) The crashed invocation's Lease.
	v := e.rotate()
	e.recordJob(v)
	crashed, err := state.New(e.admin, fcCluster)
	if err != nil {
		t.Fatal(err)
	}
	lease, ok, err := crashed.TryAcquire(context.Background(), "crashed-invocation", crashedLease)
	if err != nil || !ok {
		t.Fatalf("the crashed invocation's Lease: acquired %v, %v", ok, err)
	}
	expires := lease.Info().Expires // never renewed: the invocation "crashed"
	e.w.start()
	var busy int
	var out job.Outcome
	var tookOver time.Time
	for i := 1; ; i++ {
		if i > 30 {
			t.Fatalf("no invocation took over the crashed invocation's Lease: %s %s", out.Status, out.Reason)
		}
		var took time.Duration
		tookOver = time.Now()
		out, err, took = e.invocation(fmt.Sprintf("lease-inv-%d", i), time.Minute, v)
		if err != nil {
			t.Fatalf("invocation %d: %v", i, err)
		}
		if out.Status != job.StatusBusy {
			break
		}
		busy++
		if out.Lease == nil || out.Lease.Holder != "crashed-invocation" {
			t.Fatalf("busy invocation %d names holder %+v, want the crashed invocation", i, out.Lease)
		}
		if took > 2*time.Second {
			t.Errorf("a busy invocation took %s: it must return at once", took)
		}
		time.Sleep(time.Second) // the next invocation (FC's retry, the next timer) a second later
	}
	if busy == 0 {
		t.Errorf("the first invocation ran although the crashed invocation's Lease was live until %s", expires.Format(time.TimeOnly))
	}
	if tookOver.Before(expires) {
		t.Errorf("an invocation took the Lease over at %s, before it expired at %s", tookOver.Format(time.StampMilli), expires.Format(time.StampMilli))
	}
	// The one that took over finishes the job, or (a busy machine: the job needs more than its
	// minute) leaves a checkpoint the next invocations finish from; each must move the job.
	finishing := 1
	for out.Status == job.StatusPartial && finishing < 10 {
		if out.Stalled > 0 {
			t.Fatalf("invocation %d after the takeover made no progress: %s", finishing, out.NoProgress)
		}
		finishing++
		if out, err, _ = e.invocation(fmt.Sprintf("lease-finish-%d", finishing), time.Minute, v); err != nil {
			t.Fatalf("invocation %d after the takeover: %v", finishing, err)
		}
	}
	if out.Status != job.StatusDone {
		t.Fatalf("after the takeover, %d invocations: %s (%s), want done", finishing, out.Status, out.Reason)
	}
	p := e.prove(kc)
	tb.add(t, row{order: order * 10, fault: fmt.Sprintf("function: a crashed invocation left the cluster's Lease (%s, never renewed)", crashedLease),
		happened: fmt.Sprintf("%d invocations answered busy (holder crashed-invocation); the next took over %.1fs after expiry and finished (in %d invocation(s) of 1 min): done, verified %s",
			busy, tookOver.Sub(expires).Seconds(), finishing, short(out.VerifiedVersion)),
		reencrypted: p.reencrypted(), lost: p.lost, recover: since(expires, time.Now()) + " after the Lease expired"})

	// (2) Invocations of 3 s for a job that needs several times that.
	e.freshWriter()
	v = e.rotate()
	e.recordJob(v)
	e.w.start()
	began := time.Now()
	var outs []job.Outcome
	for i := 1; ; i++ {
		// How many invocations it takes depends on the machine (beside the e2e suite on 2 cores,
		// more than 40); what must hold is that each one moves the job (Stalled below). The cap only
		// keeps a broken job from looping for ever.
		if i > 300 {
			t.Fatalf("the job did not finish in 300 invocations: %s %s", out.Status, out.Reason)
		}
		var took time.Duration
		out, err, took = e.invocation(fmt.Sprintf("deadline-inv-%d", i), shortDeadline, v)
		if err != nil {
			t.Fatalf("invocation %d: %v", i, err)
		}
		if took > shortDeadline+500*time.Millisecond {
			t.Errorf("invocation %d overran its %s deadline: %s", i, shortDeadline, took.Round(time.Millisecond))
		}
		outs = append(outs, out)
		if out.Status == job.StatusDone {
			break
		}
		// Partial with a checkpoint; or, before the pass, partial in the adoption gate (a busy
		// machine: the gate's canary writes did not fit the 2 s left), which the next invocation
		// runs again. The cap above catches a gate that never fits.
		inGate := out.Checkpoint == nil && strings.Contains(out.Reason, "adoption gate")
		if out.Status != job.StatusPartial || (out.Checkpoint == nil && !inGate) {
			t.Fatalf("invocation %d: %s (%s), want partial with a checkpoint until done", i, out.Status, out.Reason)
		}
		if out.Stalled > 1 {
			t.Fatalf("invocation %d: %d invocations in a row made no progress: %s", i, out.Stalled, out.NoProgress)
		}
	}
	if len(outs) < 3 {
		t.Errorf("the job finished in %d invocations of %s: the deadline did not bite", len(outs), shortDeadline)
	}
	if out.VerifiedVersion != v {
		t.Errorf("done with verified version %q, want %s", out.VerifiedVersion, v)
	}
	p = e.prove(kc)
	tb.add(t, row{order: order*10 + 1, fault: fmt.Sprintf("function: invocation deadline %s, far shorter than the job", shortDeadline),
		happened:    fmt.Sprintf("%d invocations, each stopped before its deadline and resumed from the checkpoint; the last: done, verified", len(outs)),
		reencrypted: p.reencrypted(), lost: p.lost, recover: since(began, time.Now()) + " for the whole job"})
}
