package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rekey-dev/rekey/infra/local/eventbridge"
	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

// TestTwinServerless runs the serverless product end to end on the local twin: the real function
// binaries with s.yaml's env, timeouts and trigger patterns, the real control plane and KMS v2
// chain, EventBridge fed by the KMS stand-in's ActionTrail records, the CS stand-in and a webhook.
// The scenarios share one twin and run in order; every claim about re-encryption is read from
// etcd. The last one scans everything the functions said for Secret values and credentials. It
// runs on the ACK-shaped twin with the replicas adopting 5 s apart instead of 30 (TestACKShapedTwin
// covers the long spread): its four rotations each wait for every replica.
func TestTwinServerless(t *testing.T) {
	tw := startTwin(t, twin.Options{AdoptSpread: 5 * time.Second})
	cs := typed(t, tw.Cluster)
	const n = 600
	values := createSecrets(t, cs, n, "twin-a", "twin-b", "twin-c")
	v1, err := tw.KMS.PrimaryVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	requireAllUnder(t, tw, v1, n)
	ctx := context.Background()
	// rekey is installed before the key rotates: the first in-window tick runs the baseline job,
	// which records the key-ID hash the replicas use now, so the rotation's adoption gate sees each
	// replica move away from it. (Without it the gate cannot tell an opaque key_id it never saw
	// before from the old one, and falls back to its settle delay: 2 minutes on the twin;
	// TestACKShapedTwin covers a first job without a baseline.)
	if got := jobStatuses(t, tickUntilVerified(t, tw, v1, 3)); len(got) != 1 || got[0] != "done" {
		t.Fatalf("baseline job statuses %v, want one done", got)
	}

	t.Run("manual rotation event", func(t *testing.T) {
		// Secrets under v1 -> CreateKeyVersion through the SDK -> the bridge publishes it -> the
		// rotation function records a job -> ticks -> every Secret under v2, verified.
		v2, err := tw.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res := rotationResults(t, tw.Invocations())
		if len(res) != 1 || len(res[0].Decisions) != 1 || res[0].Decisions[0].Kind != policy.Rotate || res[0].Decisions[0].Name != "CreateKeyVersion" {
			t.Fatalf("rotation function answered %+v, want one rotate decision on CreateKeyVersion", res)
		}
		if len(res[0].Runs) != 0 {
			t.Fatalf("offpeak mode, yet the rotation function ran jobs: %+v", res[0].Runs)
		}
		jobs := pendingJobs(t, tw)
		if len(jobs) != 1 || jobs[0].Version != v2 || jobs[0].Cluster != tw.ClusterID {
			t.Fatalf("pending jobs %+v, want one for %s on %s", jobs, v2, tw.ClusterID)
		}
		waitAPIServer(t, tw, v2)

		// A tick outside the window checks the version and leaves the job waiting.
		revs := secretRevisions(t, tw)
		out, err := tw.OutsideWindowTime(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		calls, err := tw.Tick(ctx, out)
		if err != nil || len(calls) != 1 {
			t.Fatalf("tick outside the window: %v (%d calls)", err, len(calls))
		}
		t.Logf("tick %s: %s", out.Format(time.RFC3339), brief(t, calls[0]))
		if r, _ := offpeakResult(t, calls[0]); r.InWindow || len(r.Clusters) != 0 || len(r.Keys) != 1 || r.Keys[0].Result != "job pending" {
			t.Fatalf("tick outside the window: %+v", r)
		}
		if changed := changedSecrets(t, tw, revs); len(changed) != 0 {
			t.Fatalf("a tick outside the window wrote %d Secrets", len(changed))
		}
		// Every Secret (the 600 and the gate's canaries) still under v1.
		requireAllUnder(t, tw, v1, n)

		calls = tickUntilVerified(t, tw, v2, 5)
		if got := jobStatuses(t, calls); len(got) != 1 || got[0] != "done" {
			t.Fatalf("job statuses %v, want one done", got)
		}
		requireAllUnder(t, tw, v2, n)
		if jobs := pendingJobs(t, tw); len(jobs) != 0 {
			t.Fatalf("jobs still pending: %+v", jobs)
		}
		r, _ := offpeakResult(t, calls[len(calls)-1])
		if v := r.Clusters[0].Jobs[0].Outcome.VerifiedVersion; v != v2 {
			t.Fatalf("verified version %q, want %s", v, v2)
		}
		requireVerifierPass(t, r.Clusters[0].Jobs[0].Outcome.Detail)
	})

	t.Run("function identity is the CS kubeconfig under exactly the function RBAC", func(t *testing.T) {
		calls := tw.CS.Calls()
		if len(calls) == 0 {
			t.Fatal("the functions never asked the CS stand-in for a kubeconfig")
		}
		for _, c := range calls {
			if c.ClusterID != tw.ClusterID || c.AccessKeyID != tw.FunctionCredential.AccessKeyID || !c.PrivateIPAddress ||
				c.TemporaryDurationMinutes < 15 || c.TemporaryDurationMinutes > 180 {
				t.Fatalf("CS call %+v: want the function role's credential, the private address and a short-lived credential", c)
			}
		}
		// No kubeconfig reaches the functions any other way.
		for _, f := range tw.SYAML.Functions() {
			for name := range f.EnvironmentVariables {
				if strings.HasPrefix(name, "REKEY_KUBECONFIG_") {
					t.Fatalf("%s has %s: the kubeconfig must come from CS", f.FunctionName, name)
				}
			}
		}
		requireOnlyShippedBindings(t, tw)
	})

	t.Run("another account's event changes nothing", func(t *testing.T) {
		revs, before, alerts := secretRevisions(t, tw), len(tw.Invocations()), len(tw.Webhook.Alerts())
		rec := lastRecord(t, tw, "CreateKeyVersion")
		rec.EventID = "other-account-" + rec.EventID
		ev, ok, err := eventbridge.KMSEvent(rec, "9999888877776666", time.Now())
		if err != nil || !ok {
			t.Fatalf("event: %v %v", ok, err)
		}
		_, calls, err := tw.Publish(ctx, ev)
		if err != nil || len(calls) != 1 {
			t.Fatalf("publish: %v (%d invocations)", err, len(calls))
		}
		res := rotationResults(t, calls)
		if d := res[0].Decisions; len(d) != 1 || d[0].Kind != policy.Ignore || !strings.Contains(d[0].Reason, "9999888877776666") || d[0].Recorded != nil {
			t.Fatalf("decisions %+v, want ignored for the account", d)
		}
		if len(pendingJobs(t, tw)) != 0 || len(changedSecrets(t, tw, revs)) != 0 || len(tw.Webhook.Alerts()) != alerts || len(tw.Invocations()) != before+1 {
			t.Fatal("another account's event changed something")
		}
	})

	t.Run("DisableKey alerts and runs nothing", func(t *testing.T) {
		revs, alerts := secretRevisions(t, tw), len(tw.Webhook.Alerts())
		before := len(tw.Invocations())
		kmsBefore := tw.FunctionKMSCalls()
		if err := tw.SetKeyEnabled(ctx, false); err != nil {
			t.Fatal(err)
		}
		rec := lastRecord(t, tw, "DisableKey")
		res := rotationResults(t, tw.Invocations()[before:])
		if len(res) != 1 || len(res[0].Decisions) != 1 || res[0].Decisions[0].Kind != policy.Alert || res[0].Decisions[0].Notified != "sent" || len(res[0].Runs) != 0 {
			t.Fatalf("rotation function answered %+v, want one alert, sent, no run", res)
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		got, err := tw.Webhook.Wait(actx, alerts+1)
		if err != nil {
			t.Fatal(err)
		}
		var notice policy.Notice
		if err := json.Unmarshal(got[alerts].Body, &notice); err != nil {
			t.Fatalf("alert %s: %v", got[alerts].Body, err)
		}
		t.Logf("alert: %s", got[alerts].Body)
		if notice.Severity != policy.Critical || !strings.Contains(notice.Key, tw.KMS.KeyID) || !slices.Equal(notice.Clusters, []string{tw.ClusterID}) ||
			notice.Action != "DisableKey" || !strings.Contains(notice.Actor, "root") || notice.Event.ID != rec.EventID ||
			notice.Event.Source != events.SourceKMS || !strings.Contains(notice.Impact, "decrypt") {
			t.Fatalf("alert %+v: want critical, the key, the cluster, DisableKey, the actor, event %s, the impact", notice, rec.EventID)
		}

		// A tick while the key is disabled adds no job either.
		at, err := tw.WindowTime(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		calls, err := tw.Tick(ctx, at)
		if err != nil {
			t.Fatalf("tick: %v", err)
		}
		t.Logf("tick while disabled: %s", brief(t, calls[0]))
		if r, _ := offpeakResult(t, calls[0]); len(r.Keys) != 1 || r.Keys[0].Result != "key not enabled" {
			t.Fatalf("tick while disabled: %+v", r)
		}
		if changed := changedSecrets(t, tw, revs); len(changed) != 0 {
			t.Fatalf("%d Secrets written after DisableKey: %v", len(changed), changed[:min(5, len(changed))])
		}
		if jobs := pendingJobs(t, tw); len(jobs) != 0 {
			t.Fatalf("jobs after DisableKey: %+v", jobs)
		}
		for action, n := range tw.FunctionKMSCalls() {
			if n > kmsBefore[action] && action != "DescribeKey" {
				t.Fatalf("the functions called %s %d times after DisableKey: only DescribeKey is expected", action, n-kmsBefore[action])
			}
		}

		// EnableKey: a recovery notice, and the key serves again.
		if err := tw.SetKeyEnabled(ctx, true); err != nil {
			t.Fatal(err)
		}
		got, err = tw.Webhook.Wait(actx, alerts+2)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got[alerts+1].Body, &notice); err != nil || notice.Action != "EnableKey" || notice.Severity == policy.Critical {
			t.Fatalf("recovery notice %s: %v", got[alerts+1].Body, err)
		}
	})

	t.Run("the same event delivered 5 times concurrently makes one job and one run", func(t *testing.T) {
		alerts := len(tw.Webhook.Alerts())
		// Create the version with the bridge muted, then deliver its event ourselves, 5 times at once.
		tw.MuteEvents(true)
		v3, err := tw.KMS.Rotate()
		tw.MuteEvents(false)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.FlushEvents(ctx); err != nil {
			t.Fatal(err)
		}
		rec := lastRecord(t, tw, "CreateKeyVersion")
		if rec.ResponseElements["KeyVersionId"] != v3 {
			t.Fatalf("last CreateKeyVersion record is for %v, want %s", rec.ResponseElements, v3)
		}
		ev, ok, err := eventbridge.KMSEvent(rec, "", time.Now())
		if err != nil || !ok {
			t.Fatalf("event: %v %v", ok, err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var all []twin.Invocation
		for range 5 {
			wg.Go(func() {
				_, calls, err := tw.Publish(ctx, ev)
				if err != nil {
					t.Errorf("publish: %v", err)
				}
				mu.Lock()
				all = append(all, calls...)
				mu.Unlock()
			})
		}
		wg.Wait()
		res := rotationResults(t, all)
		if len(res) != 5 {
			t.Fatalf("%d answers, want 5", len(res))
		}
		added := 0
		for _, r := range res {
			for _, d := range r.Decisions {
				if d.Recorded != nil {
					added += len(d.Recorded.Added)
				}
			}
		}
		jobs := pendingJobs(t, tw)
		if added != 1 || len(jobs) != 1 || jobs[0].Version != v3 {
			t.Fatalf("5 deliveries: jobs added %d, pending %+v; want 1 and one job for %s", added, jobs, v3)
		}
		waitAPIServer(t, tw, v3)

		// Three overlapping ticks: one runs the job, the others find it busy or done.
		at, err := tw.WindowTime(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var ticks []twin.Invocation
		for range 3 {
			wg.Go(func() {
				calls, err := tw.Tick(ctx, at)
				if err != nil {
					t.Errorf("tick: %v", err)
				}
				mu.Lock()
				ticks = append(ticks, calls...)
				mu.Unlock()
			})
		}
		wg.Wait()
		for _, c := range ticks {
			t.Logf("overlapping tick: %s", brief(t, c))
		}
		if v, _ := tw.VerifiedVersion(ctx); v != v3 {
			ticks = append(ticks, tickUntilVerified(t, tw, v3, 5)...)
		}
		runs := 0
		for _, s := range jobStatuses(t, ticks) {
			if s != "busy" {
				runs++
			}
		}
		if runs != 1 {
			t.Fatalf("job statuses %v: want exactly one run", jobStatuses(t, ticks))
		}
		requireAllUnder(t, tw, v3, n)
		if got := tw.Webhook.Alerts(); len(got) != alerts {
			var extra []string
			for _, a := range got[alerts:] {
				extra = append(extra, string(a.Body))
			}
			t.Fatalf("%d notices during a rotation's delivery and run, want none: %s", len(got)-alerts, strings.Join(extra, "\n"))
		}
	})

	t.Run("automatic rotation without an event is found by the timer", func(t *testing.T) {
		before := len(tw.Invocations())
		tw.MuteEvents(true)
		v4, err := tw.KMS.Rotate()
		tw.MuteEvents(false)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.FlushEvents(ctx); err != nil {
			t.Fatal(err)
		}
		if got := len(tw.Invocations()); got != before {
			t.Fatalf("%d invocations for a rotation without an event", got-before)
		}
		if jobs := pendingJobs(t, tw); len(jobs) != 0 {
			t.Fatalf("jobs before the tick: %+v", jobs)
		}
		waitAPIServer(t, tw, v4)
		calls := tickUntilVerified(t, tw, v4, 5)
		r, _ := offpeakResult(t, calls[0])
		if len(r.Keys) != 1 || r.Keys[0].Result != "job added" || r.Keys[0].Primary != v4 {
			t.Fatalf("first tick's version check %+v, want a job added for %s", r.Keys, v4)
		}
		requireAllUnder(t, tw, v4, n)
	})

	t.Run("no Secret value and no credential in any function log or response", func(t *testing.T) {
		secrets := make(map[string][]byte, len(values))
		for k, v := range values {
			secrets["value of Secret "+k] = v
		}
		out := tw.Output()
		var size int
		for _, b := range out {
			size += len(b)
		}
		if size < 10_000 || len(out) < 10 {
			t.Fatalf("only %d bytes of output in %d places: the scan would prove nothing", size, len(out))
		}
		if leaks := tw.Leaks(secrets); len(leaks) != 0 {
			t.Fatalf("leaks:\n%s", strings.Join(leaks, "\n"))
		}
		t.Logf("scanned %d bytes in %d logs, responses and alerts for %d credentials and %d Secret values: 0 hits",
			size, len(out), len(tw.Credentials()), len(secrets))
	})
	if errs := tw.BridgeErrors(); len(errs) != 0 {
		t.Errorf("EventBridge deliveries failed: %v", errs)
	}
}

// lastRecord returns the KMS stand-in's last ActionTrail record of action.
func lastRecord(t *testing.T, tw *twin.Twin, action string) kmsapi.Record {
	t.Helper()
	recs := tw.KMS.Server().Records()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].EventName == action && recs[i].ErrorCode == "" {
			return recs[i]
		}
	}
	t.Fatalf("no %s record", action)
	return kmsapi.Record{}
}

// requireVerifierPass fails unless a job's detail carries a verifier report with verdict PASS.
func requireVerifierPass(t *testing.T, detail any) {
	t.Helper()
	b, err := json.Marshal(detail)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Verify *struct {
			Verdict string `json:"verdict"`
			Layers  []struct {
				Name   string `json:"name"`
				Status string `json:"status"`
			} `json:"layers"`
		} `json:"verify"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Verify == nil || d.Verify.Verdict != "PASS" {
		t.Fatalf("verifier report %s, want PASS", b)
	}
	t.Logf("verifier: %s %+v", d.Verify.Verdict, d.Verify.Layers)
}

// requireOnlyShippedBindings fails unless every RBAC binding naming the function's user comes
// from infra/rbac/rekey-function.yaml.
func requireOnlyShippedBindings(t *testing.T, tw *twin.Twin) {
	t.Helper()
	cs := typed(t, tw.Cluster)
	ctx := context.Background()
	var bound []string
	crbs, err := cs.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range crbs.Items {
		for _, s := range b.Subjects {
			if s.Name == twin.FunctionUser {
				bound = append(bound, "ClusterRoleBinding "+b.Name+" -> "+b.RoleRef.Name)
			}
		}
	}
	rbs, err := cs.RbacV1().RoleBindings("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range rbs.Items {
		for _, s := range b.Subjects {
			if s.Name == twin.FunctionUser {
				bound = append(bound, fmt.Sprintf("RoleBinding %s/%s -> %s", b.Namespace, b.Name, b.RoleRef.Name))
			}
		}
	}
	slices.Sort(bound)
	want := []string{"ClusterRoleBinding rekey-function -> rekey-function", "RoleBinding kube-system/rekey-function-replicas -> rekey-function-replicas",
		"RoleBinding rekey-system/rekey-function -> rekey-function"}
	if !slices.Equal(bound, want) {
		t.Fatalf("bindings of %s: %v, want exactly %v", twin.FunctionUser, bound, want)
	}
}
