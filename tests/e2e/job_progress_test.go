package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/faultproxy"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/state"
)

// TestEveryInvocationMovesTheCheckpointOnASlowAPIServer: the API server answers each Secret patch
// after 40 ms (a fault proxy in front of it), the job patches 2 at a time in pages of 500, and each
// invocation has 5 s (about 3.3 s of work before its stop margin, ~165 patches): one page takes
// ~10 s, longer than any invocation. Every invocation that runs a pass must still move the
// checkpoint (positions inside a page), none reports no progress, and the job finishes with every
// Secret under the new version in etcd. With checkpoints that moved only at page boundaries, no
// invocation would ever save anything here.
func TestEveryInvocationMovesTheCheckpointOnASlowAPIServer(t *testing.T) {
	st, c := kmsV2ClusterWithUsers(t, controlplane.User{Name: functionUser})
	applyFunctionRBAC(t, c)
	const n, ns = 600, "slow-pages"
	createSecrets(t, typed(t, c), n, ns)
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
	p, err := faultproxy.Start(c.Server, c.CAData)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.SetRules(faultproxy.Rule{Method: "PATCH", PathContains: "/secrets/", Every: 1, Fail: 1, Delay: 40 * time.Millisecond})
	cfg := c.RestConfig(functionUser)
	cfg.Host, cfg.TLSClientConfig = p.URL(), rest.TLSClientConfig{} // plain HTTP to the loopback proxy

	const cluster = "c-slow"
	spec := job.Spec{Cluster: cluster, KeyID: st.KeyID, Version: v2, Reason: "CreateKeyVersion (e2e)",
		Namespaces: []string{ns}, Concurrency: 2, PageSize: 500}
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	var prev *state.Checkpoint
	for i := 1; ; i++ {
		if i > 200 { // a guard only: every invocation must move the checkpoint (below)
			t.Fatalf("the job did not finish in 200 invocations")
		}
		deps := job.Deps{
			Rest: cfg, KMS: kmsClient, Etcd: c.Etcd, EtcdEndpoints: []string{c.EtcdEndpoint},
			State: stateStore(t, userClient(t, c, functionUser, nil), cluster, nil), Holder: fmt.Sprintf("inv-%d", i),
			Logger: &logger, Adoption: job.Adoption{Mode: adoption.Auto},
		}
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := job.Run(ictx, spec, deps)
		cancel()
		if err != nil {
			t.Fatalf("invocation %d: %v (%s: %s)", i, err, out.Status, out.Reason)
		}
		if out.Status == job.StatusDone {
			t.Logf("invocation %d: done (%s); %d slowed patches", i, out.Reason, p.Injected())
			if i < 4 {
				t.Fatalf("done after %d invocations: the slow API server did not bite", i)
			}
			break
		}
		cp := out.Checkpoint
		if out.Status != job.StatusPartial || cp == nil {
			t.Fatalf("invocation %d: %s (%s), want partial with a checkpoint until done", i, out.Status, out.Reason)
		}
		t.Logf("invocation %d: %s; checkpoint %s at %q after %q, %d done", i, out.Status, cp.Phase, cp.Continue, cp.After, cp.Counts.Done())
		ranPass := out.Summary != nil || out.Convergence != nil
		if ranPass && (out.NoProgress != "" || out.Stalled != 0) {
			t.Fatalf("invocation %d made no progress: %s", i, out.NoProgress)
		}
		if ranPass && prev != nil && cp.Phase == prev.Phase && cp.Counts.Done() <= prev.Counts.Done() {
			t.Fatalf("invocation %d: the checkpoint did not move (%d done, %d before)", i, cp.Counts.Done(), prev.Counts.Done())
		}
		prev = cp
	}
	if r := kmsScan(t, c, v2); r.Stale() != 0 || r.Total < n {
		t.Fatalf("etcd after the job: %d of %d values not under %s: %v", r.Stale(), r.Total, v2, r.Offenders)
	}
}
