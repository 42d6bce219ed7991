package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/evidence"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/replicas"
	"github.com/rekey-dev/rekey/shared/verify"
)

// ackJobs returns every job result of the off-peak invocations, in order.
func ackJobs(t *testing.T, calls []twin.Invocation) []jobInfo {
	t.Helper()
	var out []jobInfo
	for _, c := range calls {
		r, ok := offpeakResult(t, c)
		if !ok {
			continue
		}
		for _, cl := range r.Clusters {
			for _, j := range cl.Jobs {
				out = append(out, jobDetail(t, j.Outcome.Detail))
			}
		}
	}
	return out
}

// TestACKShapedTwin runs rekey the way ACK Pro will: two kube-apiserver replicas behind a load
// balancer that pins connections, each with its own KMS v2 plugin whose key_id is not the version ID
// and which adopts a new key version 30 s after the other; the functions' identity is the numeric
// RAM role ID; etcd is never given to rekey (only these assertions read it). The scenarios share
// one twin and run in order; each would fail on a rekey that trusts the kinder single-server twin.
func TestACKShapedTwin(t *testing.T) {
	tw := startTwin(t, twin.Options{AdoptSpread: 30 * time.Second, Timeouts: map[string]time.Duration{offpeakFn: 75 * time.Second}})
	if n := len(tw.Cluster.Replicas()); n != 2 {
		t.Fatalf("%d replicas, want 2", n)
	}
	cs := typed(t, tw.Cluster)
	const n = 300
	secrets := createSecrets(t, cs, n, "ack-a", "ack-b")
	ctx := context.Background()
	var first evidence.Record // the evidence record of the first rotation
	v1, err := tw.KMS.PrimaryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	requireAllUnder(t, tw, v1, n)
	// The CLI's KMS and ActionTrail credentials, from the environment as documented.
	t.Setenv(kms.EnvAccessKeyID, tw.KMS.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, tw.KMS.Admin.AccessKeySecret)

	t.Run("the first job on a fresh cluster without etcd is done once, not suspicious, then idle", func(t *testing.T) {
		calls := tickWhileProgressing(t, tw, v1, 20)
		jobs := ackJobs(t, calls)
		last := jobs[len(jobs)-1]
		if last.Status != "done" || (last.Verdict != nil && last.Verdict.Suspicious()) {
			t.Fatalf("baseline job %s (%s), want done and not suspicious", last.Status, last.Reason)
		}
		for _, j := range jobs {
			if j.Status == "suspicious" || j.Status == "failed" {
				t.Fatalf("a baseline tick ended %s: %s", j.Status, j.Reason)
			}
		}
		requireCoverage(t, tw, last.Verify)
		// Idle afterwards: the key check finds the primary verified, no job runs.
		at, _ := tw.WindowTime(time.Now())
		next, err := tw.Tick(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := offpeakResult(t, next[0])
		if len(r.Keys) != 1 || r.Keys[0].Result != "current" || len(r.Clusters) != 1 || r.Clusters[0].Status != "idle" {
			t.Fatalf("tick after the baseline: %s", brief(t, next[0]))
		}
	})

	t.Run("rotate, then tick at once: done only when every replica adopted and every Secret is under the new version", func(t *testing.T) {
		v2, err := tw.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// No waiting for the API servers: the functions must find out themselves.
		calls := tickWhileProgressing(t, tw, v2, 20)
		jobs := ackJobs(t, calls)
		for i, j := range jobs[:len(jobs)-1] {
			if j.Status == "done" {
				t.Fatalf("job %d of %d was done before the last: %s", i+1, len(jobs), j.Reason)
			}
		}
		last := jobs[len(jobs)-1]
		if last.Status != "done" {
			t.Fatalf("last job %s: %s", last.Status, last.Reason)
		}
		requireAllUnder(t, tw, v2, n)
		// The plugins' key_id is not the version ID: adoption was proved by the moving hash, over
		// both replicas.
		var ev *adoption.Evidence
		for _, j := range jobs {
			if j.Adoption != nil {
				ev = j.Adoption
			}
		}
		if ev == nil || ev.Kind != adoption.Metrics || ev.Replicas != 2 || !strings.Contains(ev.Detail, "moved their KMS key ID") || ev.KeyIDHash == "" {
			t.Fatalf("adoption evidence %+v, want the metrics' moving hash over 2 replicas", ev)
		}
		requireCoverage(t, tw, last.Verify)
		// Exactly one evidence record for it, true to etcd, naming its trigger, without Secret data.
		first = requireRotationRecord(t, tw, v2, secrets)
		if first.Adoption == nil || first.Adoption.Kind != string(adoption.Metrics) || first.TimeToAdoptionSeconds <= 0 {
			t.Fatalf("record adoption %+v after %vs", first.Adoption, first.TimeToAdoptionSeconds)
		}
	})

	t.Run("rekey verify with kms and audit only is not a PASS", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := cli.Main([]string{"verify", "--kms-key-id", tw.KMS.KeyID, "--kms-region", tw.KMS.Region, "--kms-endpoint", tw.KMS.Endpoint,
			"--kms-scheme", "HTTP", "--actiontrail-endpoint", tw.KMS.Endpoint, "--audit-role", kmsstack.PluginRole, "--output", "json"}, &out, &errb)
		var r verify.Report
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("verify output (exit %d): %v\n%s\n%s", code, err, out.String(), errb.String())
		}
		if code != cli.ExitFailed || r.Verdict == verify.Pass || r.Layer(verify.LayerAudit).Status != verify.Pass ||
			!strings.Contains(strings.Join(r.Reasons, " "), "no evidence") {
			t.Fatalf("exit %d, verdict %s, audit %s, reasons %q: want FAIL for want of evidence although audit passes", code, r.Verdict, r.Layer(verify.LayerAudit).Status, r.Reasons)
		}
	})

	t.Run("LookupEvents throttled at the end: partial, then done at the next tick without another pass", func(t *testing.T) {
		tw.KMS.Server().Throttle("LookupEvents", true)
		v3, err := tw.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var unknown bool
		for i := 0; i < 20 && !unknown; i++ {
			at, _ := tw.WindowTime(time.Now())
			calls, err := tw.Tick(ctx, at)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("tick: %s", brief(t, calls[0]))
			for _, j := range ackJobs(t, calls) {
				if j.Status == "done" || j.Status == "failed" {
					t.Fatalf("job %s while LookupEvents is throttled: %s", j.Status, j.Reason)
				}
				unknown = unknown || (j.Verify != nil && j.Verify.Verdict == verify.Unknown && j.Status == "partial")
			}
		}
		if !unknown {
			t.Fatal("the verifier never reported that it could not check")
		}
		tw.KMS.Server().Throttle("LookupEvents", false)
		revs := secretRevisions(t, tw)
		at, _ := tw.WindowTime(time.Now())
		calls, err := tw.Tick(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		jobs := ackJobs(t, calls)
		if len(jobs) != 1 || jobs[0].Status != "done" || jobs[0].Summary != nil || jobs[0].Convergence != nil {
			t.Fatalf("tick after the throttling: %s; want done with the verifier only", brief(t, calls[0]))
		}
		if changed := changedSecrets(t, tw, revs); len(changed) != 0 {
			t.Fatalf("the tick after the throttling wrote %d Secrets: it ran a pass again", len(changed))
		}
		requireAllUnder(t, tw, v3, n)
		// The partial outcomes in between (mid-window) left no record; the done one did.
		evidenceAfterSecondRotation(t, tw, first, v3, secrets)
	})

	t.Run("rekey run right after a rotation, through the load balancer, without etcd", func(t *testing.T) {
		v4, err := tw.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		kc := filepath.Join(t.TempDir(), "admin.kubeconfig")
		if err := tw.Cluster.WriteKubeconfig(controlplane.AdminUser, kc); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := cli.Main([]string{"run", "--kubeconfig", kc, "--kms-key-id", tw.KMS.KeyID, "--kms-region", tw.KMS.Region, "--kms-endpoint", tw.KMS.Endpoint,
			"--kms-scheme", "HTTP", "--verify", "--actiontrail-endpoint", tw.KMS.Endpoint, "--audit-role", kmsstack.PluginRole,
			"--adoption-timeout", "4m", "--progress", "never", "--output", "json"}, &out, &errb)
		if code != cli.ExitOK {
			t.Fatalf("rekey run: exit %d\n%s\n%s", code, tail(out.Bytes(), 30), tail(errb.Bytes(), 60))
		}
		// Done means done: every Secret under v4 the moment the CLI returns.
		requireAllUnder(t, tw, v4, n)
		var report struct {
			Verify *verify.Report `json:"verify"`
		}
		if err := json.Unmarshal(out.Bytes(), &report); err != nil {
			t.Fatalf("run output: %v", err)
		}
		requireCoverage(t, tw, report.Verify)
	})

	t.Run("one replica held on the old version: the job is not done and names it", func(t *testing.T) {
		tw.KMS.FreezeStatus(1, true)
		defer tw.KMS.FreezeStatus(1, false)
		v5, err := tw.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The CLI's gate recorded the previous version's key-ID hash on its ledger when it proved
		// it: the functions' gate knows what "not moved" means for each replica.
		frozen := replicas.Short(tw.Cluster.Replicas()[1].APIServerIDHash)
		at, _ := tw.WindowTime(time.Now())
		calls, err := tw.Tick(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("tick: %s", brief(t, calls[0]))
		other := replicas.Short(tw.Cluster.Replicas()[0].APIServerIDHash)
		jobs := ackJobs(t, calls)
		if len(jobs) != 1 || jobs[0].Status == "done" || !strings.Contains(jobs[0].Reason, frozen) || strings.Contains(jobs[0].Reason, other) {
			t.Fatalf("job %+v: want it not done, naming the frozen replica %s and not %s, which adopted", jobs, frozen, other)
		}
		if v, err := tw.VerifiedVersion(ctx); err != nil || v == v5 {
			t.Fatalf("verified version %q (%v): v5 must not be recorded", v, err)
		}
		if r, err := tw.ScanSecrets(ctx, v5); err != nil || r.Stale() == 0 {
			t.Fatalf("etcd: %d stale (%v): nothing should claim every Secret is under v5", r.Stale(), err)
		}
	})
}

// requireCoverage fails unless the verifier's convergence layer passed with every one of the
// twin's API server replicas covered.
func requireCoverage(t *testing.T, tw *twin.Twin, r *verify.Report) {
	t.Helper()
	if r == nil || r.Verdict != verify.Pass || r.Replicas == nil {
		t.Fatalf("verifier %+v: want PASS with replica coverage", r)
	}
	want := map[string]bool{}
	for _, rep := range tw.Cluster.Replicas() {
		want[rep.APIServerIDHash] = true
	}
	if l := r.Layer(verify.LayerConvergence); l.Status != verify.Pass || r.Replicas.Expected != len(want) || len(r.Replicas.Covered) != len(want) {
		t.Fatalf("convergence %s (%q), replicas %+v: want every one of %d replicas covered", l.Status, l.Reasons, r.Replicas, len(want))
	}
	for _, id := range r.Replicas.Covered {
		if !want[id] {
			t.Fatalf("covered replica %s is not one of the twin's", id)
		}
	}
}
