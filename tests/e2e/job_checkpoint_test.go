package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/verify"
)

// TestJobFinishesAcrossShortDeadlines: 2,000 Secrets under key version v1 on the real control
// plane with the KMS v2 chain; the key rotates; a rotation job runs as the functions' identity
// (infra/rbac/rekey-function.yaml) in invocations of 3.5 s each, while writers update, create and
// delete Secrets. Each invocation stops before its deadline and leaves a checkpoint; the next
// resumes from it (the pass is not started over), through the checkpointed convergence pass to
// the verifier. The job ends done: etcd holds every Secret under v2, the state records v2 as
// verified, the pending job is gone, and no writer's update was lost.
func TestJobFinishesAcrossShortDeadlines(t *testing.T) {
	st, c := kmsV2ClusterWithUsers(t, controlplane.User{Name: functionUser})
	applyFunctionRBAC(t, c)
	admin := typed(t, c)
	namespaces := []string{"job-a", "job-b", "job-c", "job-d"}
	const n = 2000
	last := createSecrets(t, admin, n, namespaces...)
	v2, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	if err := st.WaitAPIServer(wctx, c, v2); err != nil {
		t.Fatal(err)
	}
	kmsClient, err := st.Client(st.Admin)
	if err != nil {
		t.Fatal(err)
	}
	trail, err := actiontrail.NewSDKClient(actiontrail.Config{Region: st.Region, Endpoint: st.Endpoint, Scheme: kms.SchemeHTTP, Credentials: st.Admin})
	if err != nil {
		t.Fatal(err)
	}
	const cluster = "c-job"
	record := stateStore(t, userClient(t, c, functionUser, nil), cluster, nil)
	rec, err := record.AddJobs(ctx, policy.Job{Cluster: cluster, Key: st.KeyID, Version: v2, Reason: "CreateKeyVersion (e2e)", NotBefore: time.Now()})
	if err != nil || len(rec.Added) != 1 {
		t.Fatalf("record the job: %+v %v", rec, err)
	}
	pending := rec.Added[0]

	// Writers: full read-modify-write updates, creates and deletes, between the invocations too.
	keys := make([]string, 0, len(last))
	for k := range last {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var mu sync.Mutex
	deleted := map[string]bool{}
	var stopping atomic.Bool
	var wg sync.WaitGroup
	var writes, creates, deletes atomic.Int64
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; !stopping.Load(); i++ {
				k := keys[rng.IntN(len(keys))]
				ns, name := splitKey(k)
				switch op := rng.IntN(10); {
				case op < 7:
					mu.Lock()
					gone := deleted[k]
					mu.Unlock()
					if gone {
						continue
					}
					s, err := admin.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						continue
					}
					v := randomBytes(t, 64)
					s.Data["v"] = v
					if _, err := admin.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err == nil {
						mu.Lock()
						last[k] = v
						mu.Unlock()
						writes.Add(1)
					}
				case op < 9:
					name := fmt.Sprintf("new-%d-%d", w, i)
					v := randomBytes(t, 64)
					s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"v": v}}
					if _, err := admin.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err == nil {
						mu.Lock()
						last[ns+"/"+name] = v
						mu.Unlock()
						creates.Add(1)
					}
				default:
					if err := admin.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
						mu.Lock()
						deleted[k] = true
						delete(last, k)
						mu.Unlock()
						deletes.Add(1)
					}
				}
			}
		}()
	}
	stopWriters := func() {
		if !stopping.Swap(true) {
			wg.Wait()
		}
	}
	defer stopWriters()

	// Invocations of 3.5 s, as Function Compute would give them, each with its own clients; 4
	// workers (about 2 s of work per invocation) so that the deadline bites however idle the
	// machine is.
	spec := job.Spec{Cluster: cluster, KeyID: st.KeyID, Version: v2, Reason: pending.Reason, Concurrency: 4, PageSize: 50}
	var outcomes []job.Outcome
	var passListed int64
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	for i := 1; ; i++ {
		// How many invocations it takes depends on the machine (a busy one does ~40 objects in
		// each); what must hold is that each one moves the job (checked below). The cap only
		// keeps a broken job from looping for ever.
		if i > 300 {
			t.Fatalf("the job did not finish in 300 invocations: %+v", outcomes[len(outcomes)-1])
		}
		deps := job.Deps{
			Rest: c.RestConfig(functionUser), KMS: kmsClient, Trail: trail, AuditRole: kmsstack.PluginRole,
			Etcd: c.Etcd, EtcdEndpoints: []string{c.EtcdEndpoint},
			State: stateStore(t, userClient(t, c, functionUser, nil), cluster, nil), Holder: fmt.Sprintf("inv-%d", i),
			Logger: &logger, StopMargin: 1500 * time.Millisecond, CheckpointInterval: 500 * time.Millisecond,
			Adoption: job.Adoption{Mode: adoption.Auto},
		}
		ictx, cancel := context.WithTimeout(ctx, 3500*time.Millisecond)
		started := time.Now()
		out, err := job.Run(ictx, spec, deps)
		took := time.Since(started)
		cancel()
		if err != nil {
			t.Fatalf("invocation %d: %v (%s: %s)", i, err, out.Status, out.Reason)
		}
		if took > 3500*time.Millisecond {
			t.Fatalf("invocation %d overran its deadline: %s", i, took)
		}
		outcomes = append(outcomes, out)
		if out.Summary != nil {
			passListed += out.Summary.Total.Listed
		}
		cp := out.Checkpoint
		if cp == nil {
			cp = &state.Checkpoint{}
		}
		t.Logf("invocation %d: %s in %s (%s); checkpoint phase %s at %s/%s, %d done, invocation %d of the phase", i, out.Status,
			took.Round(time.Millisecond), out.Reason, cp.Phase, cp.Resource, cp.Namespace, cp.Counts.Done(), cp.Invocations)
		if out.Status == job.StatusDone {
			break
		}
		if out.Status != job.StatusPartial {
			t.Fatalf("invocation %d: %s (%s), want partial until done", i, out.Status, out.Reason)
		}
		if out.Checkpoint == nil {
			t.Fatalf("invocation %d: partial without a checkpoint", i)
		}
		if out.Stalled > 0 {
			t.Fatalf("invocation %d made no progress: %s", i, out.NoProgress)
		}
	}
	stopWriters()
	final := outcomes[len(outcomes)-1]
	t.Logf("%d invocations; writers: %d updates, %d creates, %d deletes", len(outcomes), writes.Load(), creates.Load(), deletes.Load())

	if len(outcomes) < 2 {
		t.Fatalf("the job finished in %d invocations: the deadline did not bite", len(outcomes))
	}
	// Resumed, not restarted: the pass phase listed each Secret about once over all invocations.
	if passListed > int64(n)+creates.Load()+int64(n)/2 {
		t.Fatalf("the pass listed %d objects over the invocations for %d Secrets: invocations started over", passListed, n)
	}
	if final.VerifiedVersion != v2 || final.Verify == nil || final.Verify.Verdict != verify.Pass {
		t.Fatalf("final outcome: version %q, verify %+v", final.VerifiedVersion, final.Verify)
	}
	for _, l := range []string{verify.LayerKMS, verify.LayerStorage, verify.LayerConvergence, verify.LayerAPIServer} {
		if got := final.Verify.Layer(l).Status; got != verify.Pass {
			t.Errorf("layer %s = %s", l, got)
		}
	}
	if r := kmsScan(t, c, v2); r.Stale() != 0 || r.Total < n-int(deletes.Load()) {
		t.Fatalf("etcd after the job: %d of %d values not under %s: %v", r.Stale(), r.Total, v2, r.Offenders)
	}
	snap, err := record.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.Verified[policy.Target{Cluster: cluster, Key: st.KeyID}]; got != v2 || len(snap.Pending) != 0 {
		t.Fatalf("state: verified %q, pending %+v; want %s and no pending job", got, snap.Pending, v2)
	}
	if _, found, err := record.LoadCheckpoint(ctx, pending.ID); err != nil || found {
		t.Fatalf("checkpoint after the job: found=%v err=%v", found, err)
	}

	// No lost update: every Secret holds its last write; nothing deleted came back.
	for _, ns := range namespaces {
		list, err := admin.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			k := ns + "/" + s.Name
			if deleted[k] {
				t.Errorf("%s was deleted but is back", k)
				continue
			}
			if want, ok := last[k]; !ok || !bytes.Equal(s.Data["v"], want) {
				t.Errorf("%s lost an update (known %v)", k, ok)
			}
		}
	}
}
