package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/kms"
)

// TestStrategyKMSv2Converged: on a KMS v2 cluster after a rotation, rekey (shipped RBAC) with
// --etcd-endpoints gets rewrite from etcd and re-encrypts every Secret. Then re-runs that rewrite
// nothing are judged by their evidence:
//   - with etcd: the scan after the pass shows every value under the primary -> converged, exit 0;
//   - an operator without etcd or /metrics: the adoption gate's canaries, recorded under the primary
//     after direct evidence, prove it before the pass -> converged, exit 0;
//   - the same operator with only a settle delay (no direct evidence): suspicious, exit 1;
//   - with /metrics: rewrite chosen from the metrics, adoption proved by them -> converged, exit 0.
func TestStrategyKMSv2Converged(t *testing.T) {
	st, c := kmsV2ClusterWithUsers(t, controlplane.User{Name: "operator", Token: "operator-token"}, controlplane.User{Name: "rekey", Token: "rekey-token"})
	grant(t, c, "operator", "list", "get", "patch")                // no GET /metrics, no canary creation
	applyRBACFile(t, c, func(string, string) bool { return true }) // the shipped RBAC, /metrics included
	createSecrets(t, typed(t, c), 200, "v2-a", "v2-b")
	v2, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rekeyer, operator := filepath.Join(dir, "rekey"), filepath.Join(dir, "operator")
	if err := c.WriteKubeconfig("rekey", rekeyer); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteKubeconfig("operator", operator); err != nil {
		t.Fatal(err)
	}
	t.Setenv(kms.EnvAccessKeyID, st.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, st.Admin.AccessKeySecret)
	keyArgs := []string{"--kms-key-id", st.KeyID, "--kms-region", st.Region, "--kms-endpoint", st.Endpoint, "--kms-scheme", "HTTP"}
	run := func(kubeconfig string, extra ...string) (int, string, string) {
		return rekeyCLI(t, append(append([]string{"run", "--kubeconfig", kubeconfig}, keyArgs...), extra...)...)
	}
	etcdArgs := []string{"--etcd-endpoints", c.EtcdEndpoint}

	// The gate waits for the API server to adopt v2 (etcd canary), then the pass rewrites all.
	code, stdout, _ := run(rekeyer, etcdArgs...)
	if code != cli.ExitOK || !strings.Contains(stdout, "strategy rewrite chosen by etcd") || !strings.Contains(stdout, "verdict: 200 objects rewritten") {
		t.Fatalf("first pass: exit %d", code)
	}
	if r := kmsScan(t, c, v2); r.Stale() != 0 {
		t.Fatalf("after the first pass %d values are not under %s", r.Stale(), v2)
	}

	code, stdout, _ = run(rekeyer, etcdArgs...)
	if code != cli.ExitOK || !strings.Contains(stdout, "converged: etcd shows all") || strings.Contains(stdout, "SUSPICIOUS") {
		t.Fatalf("converged re-run with etcd evidence: exit %d, want 0 and converged by etcd", code)
	}

	code, stdout, stderr := run(operator)
	if code != cli.ExitOK || !strings.Contains(stdout, "converged: the adoption gate proved") || !strings.Contains(stderr, "WARNING: no evidence of the provider") {
		t.Fatalf("converged re-run without etcd or metrics: exit %d, want 0, converged by the gate's proof, and the strategy fallback warning", code)
	}

	code, stdout, _ = run(operator, "--adoption", "settle", "--adoption-settle", "1s")
	if code != cli.ExitFailed || !strings.Contains(stdout, "suspicious: 0 rewritten after a rotation") {
		t.Fatalf("re-run without any evidence: exit %d, want 1 and suspicious", code)
	}

	code, stdout, stderr = run(rekeyer)
	if code != cli.ExitOK || !strings.Contains(stdout, "strategy rewrite chosen by metrics") || strings.Contains(stderr, "WARNING") || !strings.Contains(stdout, "converged") {
		t.Fatalf("metrics evidence: exit %d; want rewrite chosen by metrics, converged, no warning", code)
	}
}

// kmsV2ClusterWithUsers is kmsCluster(t, true) with token users.
func kmsV2ClusterWithUsers(t *testing.T, users ...controlplane.User) (*kmsstack.Stack, *controlplane.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := kmsstack.Start(ctx, kmsstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	c := controlplane.StartT(t, controlplane.Options{
		Encryption: &controlplane.Encryption{Providers: []controlplane.Provider{st.Provider(), controlplane.Identity()}},
		Users:      users,
	})
	return st, c
}
