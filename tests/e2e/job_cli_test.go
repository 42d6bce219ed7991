package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/verify"
)

// TestJobCLIRunVerify: `rekey run --verify` runs the job's verifier after the pass: after a
// rotation every Secret is rewritten, the verifier's layers pass (storage from etcd, convergence
// from its own rewrite pass), and the JSON output carries the report; without --verify there is
// none.
func TestJobCLIRunVerify(t *testing.T) {
	st, c := kmsCluster(t, true)
	createSecrets(t, typed(t, c), 200, "cli-a", "cli-b")
	v2, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := st.WaitAPIServer(ctx, c, v2); err != nil {
		t.Fatal(err)
	}
	kubeconfig := t.TempDir() + "/admin"
	if err := c.WriteKubeconfig("admin", kubeconfig); err != nil {
		t.Fatal(err)
	}
	t.Setenv(kms.EnvAccessKeyID, st.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, st.Admin.AccessKeySecret)
	args := []string{"run", "--kubeconfig", kubeconfig, "--kms-key-id", st.KeyID, "--kms-region", st.Region, "--kms-endpoint", st.Endpoint,
		"--kms-scheme", "HTTP", "--etcd-endpoints", c.EtcdEndpoint, "--output", "json"}
	var rep struct {
		reencrypt.Summary
		Verify *verify.Report `json:"verify"`
	}
	code, stdout, stderr := rekeyCLI(t, append(args, "--verify", "--actiontrail-endpoint", st.Endpoint, "--audit-role", kmsstack.PluginRole)...)
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("json: %v (exit %d, %s)", err, code, stderr)
	}
	if code != cli.ExitOK || rep.Total.Rewritten < 200 || rep.Verify == nil || rep.Verify.Verdict != verify.Pass {
		t.Fatalf("run --verify: exit %d, total %+v, verify %+v", code, rep.Total, rep.Verify)
	}
	for _, l := range []string{verify.LayerKMS, verify.LayerStorage, verify.LayerConvergence, verify.LayerAPIServer} {
		if got := rep.Verify.Layer(l).Status; got != verify.Pass {
			t.Errorf("layer %s = %s", l, got)
		}
	}
	if r := kmsScan(t, c, v2); r.Stale() != 0 {
		t.Fatalf("%d values not under %s", r.Stale(), v2)
	}
	rep.Verify = nil
	code, stdout, _ = rekeyCLI(t, args...)
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != cli.ExitOK || rep.Verify != nil {
		t.Fatalf("run without --verify: exit %d, verify %+v (%v)", code, rep.Verify, err)
	}
}
