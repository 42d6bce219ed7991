package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// kmsV1Cluster starts the KMS stand-in, rekey's local KMS v1 plugin and a control plane with the
// KMSv1 feature gate that encrypts Secrets through it (then identity): a 1.31+ cluster still on
// KMS v1, where a no-op write re-encrypts nothing after a rotation.
func kmsV1Cluster(t *testing.T, users ...controlplane.User) (*kmsstack.Stack, *controlplane.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := kmsstack.Start(ctx, kmsstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	p, err := st.StartKMSv1Plugin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	c := controlplane.StartT(t, controlplane.Options{
		Encryption:          &controlplane.Encryption{Providers: []controlplane.Provider{kmsstack.ProviderV1(p), controlplane.Identity()}},
		ExtraAPIServerFlags: []string{controlplane.KMSv1FeatureGate},
		Users:               users,
	})
	return st, c
}

// kmsV1Versions reads every stored Secret and counts the KMS key version that encrypted its DEK
// (the KMS v1 envelope: a uint16 DEK length, the DEK as the plugin returned it, i.e. the KMS
// CiphertextBlob, which names its key version). Values that are not KMS v1 count under their
// class.
func kmsV1Versions(t *testing.T, c *controlplane.Cluster) map[string]int {
	t.Helper()
	resp, err := c.Etcd.Get(context.Background(), "/registry/secrets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	prefix := "k8s:enc:kms:v1:" + kmsstack.ProviderNameV1 + ":"
	for _, kv := range resp.Kvs {
		v, err := storedvalue.Classify(kv.Value)
		if err != nil || v.Provider != storedvalue.KMSv1 {
			out["not kms-v1: "+v.Class()]++
			continue
		}
		body := kv.Value[len(prefix):]
		n := int(binary.BigEndian.Uint16(body))
		_, version, err := kmsapi.DescribeBlob(string(body[2 : 2+n]))
		if err != nil {
			t.Fatalf("%s: DEK is not a KMS ciphertext blob: %v", kv.Key, err)
		}
		out[version]++
	}
	return out
}

// TestStrategyKMSv1 drives `rekey run --kms-key-id` like an operator on a 1.37 cluster that
// still encrypts with KMS v1, after a KMS rotation:
//   - without evidence (no etcd flags, no /metrics permission) auto falls back to the version
//     rule with a warning, rewrites nothing, and the pass is reported suspicious (exit 1) with
//     KMS v1 among the causes; etcd confirms nothing was re-encrypted;
//   - with --etcd-endpoints auto chooses annotate from the stored values, and afterwards every
//     Secret's DEK is encrypted under the new key version;
//   - after another rotation, rekey under the shipped RBAC (which may read /metrics) gets annotate
//     from the metrics.
func TestStrategyKMSv1(t *testing.T) {
	st, c := kmsV1Cluster(t, controlplane.User{Name: "operator", Token: "operator-token"}, controlplane.User{Name: "rekey", Token: "rekey-token"})
	grant(t, c, "operator", "list", "get", "patch")                // no GET /metrics
	applyRBACFile(t, c, func(string, string) bool { return true }) // the shipped RBAC, /metrics included
	v1, err := st.PrimaryVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	createSecrets(t, typed(t, c), n, "v1-a", "v1-b", "v1-c")
	if got := kmsV1Versions(t, c); got[v1] < n || len(got) != 1 {
		t.Fatalf("before the rotation: %v, want every Secret's DEK under %s", got, v1)
	}
	v2, err := st.Rotate()
	if err != nil || v2 == v1 {
		t.Fatalf("rotate: %q %v", v2, err)
	}

	dir := t.TempDir()
	operator, rekeyer := filepath.Join(dir, "operator"), filepath.Join(dir, "rekey")
	if err := c.WriteKubeconfig("operator", operator); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteKubeconfig("rekey", rekeyer); err != nil {
		t.Fatal(err)
	}
	t.Setenv(kms.EnvAccessKeyID, st.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, st.Admin.AccessKeySecret)
	keyArgs := []string{"--kms-key-id", st.KeyID, "--kms-region", st.Region, "--kms-endpoint", st.Endpoint, "--kms-scheme", "HTTP"}
	run := func(kubeconfig string, extra ...string) (int, string, string) {
		return rekeyCLI(t, append(append([]string{"run", "--kubeconfig", kubeconfig}, keyArgs...), extra...)...)
	}

	// No evidence: the version rule picks rewrite, which re-encrypts nothing on KMS v1. The
	// adoption gate has no direct evidence either: it settles for a second.
	code, stdout, stderr := run(operator, "--adoption-settle", "1s")
	if code != cli.ExitFailed {
		t.Fatalf("no evidence: exit %d, want %d (suspicious)", code, cli.ExitFailed)
	}
	for _, want := range []string{"suspicious: 0 rewritten after a rotation", "--strategy annotate", "rekey verify", "strategy rewrite chosen by server-version"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no evidence: stdout does not say %q", want)
		}
	}
	if !strings.Contains(stderr, "WARNING: no evidence of the provider that stores the objects") || !strings.Contains(stderr, "from the server version v1.37") {
		t.Errorf("no evidence: stderr %q lacks the fallback warning", stderr)
	}
	if got := kmsV1Versions(t, c); got[v1] < n || got[v2] != 0 {
		t.Fatalf("after the suspicious pass: %v, want nothing re-encrypted (that is why it is suspicious)", got)
	}

	// etcd evidence: annotate, and every Secret ends under v2.
	code, stdout, stderr = run(operator, "--etcd-endpoints", c.EtcdEndpoint, "--output", "json")
	if code != cli.ExitOK {
		t.Fatalf("etcd evidence: exit %d", code)
	}
	if !strings.Contains(stderr, "adoption gate skipped: etcd shows KMS v1") {
		t.Errorf("etcd evidence: stderr %q does not say why the adoption gate was skipped", stderr)
	}
	var rep struct {
		Strategy string `json:"strategy"`
		Total    struct {
			Listed, Rewritten, Current int64
		} `json:"total"`
		StrategyDecision struct {
			Requested, Strategy, Rule, Reason string
			Writers                           []struct {
				Resource, Provider, KeyName string
			}
		} `json:"strategyDecision"`
		Verdict struct{ Status, Rule string } `json:"verdict"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("json summary: %v", err)
	}
	d := rep.StrategyDecision
	if rep.Strategy != "annotate" || d.Requested != "auto" || d.Rule != "etcd" || len(d.Writers) != 1 ||
		d.Writers[0].Provider != string(storedvalue.KMSv1) || d.Writers[0].KeyName != kmsstack.ProviderNameV1 {
		t.Fatalf("etcd evidence: decision %+v, strategy %s", d, rep.Strategy)
	}
	if rep.Total.Rewritten < n || rep.Total.Rewritten != rep.Total.Listed || rep.Verdict.Status != "ok" || rep.Verdict.Rule != "rewrote" {
		t.Fatalf("etcd evidence: total %+v, verdict %+v", rep.Total, rep.Verdict)
	}
	if got := kmsV1Versions(t, c); got[v2] != int(rep.Total.Rewritten) || len(got) != 1 {
		t.Fatalf("after the annotate pass: %v, want all %d Secrets' DEKs under %s", got, rep.Total.Rewritten, v2)
	}

	// Metrics evidence: the shipped RBAC lets rekey GET /metrics; no etcd flags.
	v3, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run(rekeyer)
	if code != cli.ExitOK || !strings.Contains(stdout, "strategy annotate chosen by metrics") || strings.Contains(stderr, "WARNING") {
		t.Fatalf("metrics evidence: exit %d, want annotate chosen by metrics without a warning", code)
	}
	if got := kmsV1Versions(t, c); got[v3] < n || len(got) != 1 {
		t.Fatalf("after the metrics-decided pass: %v, want every Secret's DEK under %s", got, v3)
	}
}
