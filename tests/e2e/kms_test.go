package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/replicas"
	"github.com/rekey-dev/rekey/shared/storedvalue"
	"github.com/rekey-dev/rekey/shared/verify"
)

// kmsCluster starts the KMS API stand-in, the KMS v2 plugin and a control plane that encrypts
// Secrets through them (then identity, as ACK does).
func kmsCluster(t *testing.T, encrypt bool) (*kmsstack.Stack, *controlplane.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := kmsstack.Start(ctx, kmsstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	providers := []controlplane.Provider{st.Provider(), controlplane.Identity()}
	if !encrypt {
		providers = []controlplane.Provider{controlplane.Identity()}
	}
	c := controlplane.StartT(t, controlplane.Options{Encryption: &controlplane.Encryption{Providers: providers}})
	return st, c
}

func kmsScan(t *testing.T, c *controlplane.Cluster, version string) etcdscan.Report {
	t.Helper()
	r, err := etcdscan.Scan(context.Background(), c.Etcd, "/registry/secrets/", func(v storedvalue.Value) bool {
		return v.Provider == storedvalue.KMSv2 && v.KeyName == kmsstack.ProviderName && v.KeyID == version
	}, etcdscan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func verifyInputs(t *testing.T, st *kmsstack.Stack, c *controlplane.Cluster) verify.Inputs {
	t.Helper()
	client, err := st.Client(st.Admin)
	if err != nil {
		t.Fatal(err)
	}
	trail, err := actiontrail.NewSDKClient(actiontrail.Config{Region: st.Region, Endpoint: st.Endpoint, Scheme: kms.SchemeHTTP, Credentials: st.Admin})
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(c.RestConfig("admin"))
	if err != nil {
		t.Fatal(err)
	}
	return verify.Inputs{KMS: client, KeyID: st.KeyID, Etcd: c.Etcd, APIServer: disco.RESTClient(), Trail: trail, AuditRole: kmsstack.PluginRole}
}

func mustVerify(t *testing.T, in verify.Inputs) verify.Report {
	t.Helper()
	r, err := verify.Verify(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = r.WriteText(&b)
	t.Logf("verify:\n%s", b.String())
	return r
}

// TestKMSRotationThroughThePlugin: 2,000 Secrets under key version v1; CreateKeyVersion; the
// verifier sees them stale; rekey run; etcd holds every Secret as a KMS v2 object under v2; a
// second pass rewrites nothing; it took a handful of KMS Encrypt calls; ActionTrail shows the
// plugin's role encrypting with v2.
func TestKMSRotationThroughThePlugin(t *testing.T) {
	st, c := kmsCluster(t, true)
	v1, err := st.PrimaryVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	createSecrets(t, typed(t, c), 2000, "kms-a", "kms-b", "kms-c", "kms-d")
	before := kmsScan(t, c, v1)
	if before.Stale() != 0 || before.Total < 2000 {
		t.Fatalf("before rotation: %+v", before.ByClass)
	}

	encrypts := st.Server().Calls("Encrypt")
	v2, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if v2 == v1 {
		t.Fatal("rotation did not create a new version")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := st.WaitAPIServer(ctx, c, v2); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server picked up key version %s after %s", v2, time.Since(t0).Round(time.Millisecond))

	in := verifyInputs(t, st, c)
	r := mustVerify(t, in)
	storage := r.Layer(verify.LayerStorage)
	if r.Verdict != verify.Fail || storage.Status != verify.Fail || !strings.Contains(strings.Join(storage.Reasons, " "), fmt.Sprintf("%d of", before.Total)) {
		t.Fatalf("verify before the run: verdict %s, storage %v; want FAIL with %d stale", r.Verdict, storage.Reasons, before.Total)
	}
	if cls := fmt.Sprintf("kms-v2:%s:%s", kmsstack.ProviderName, v1); r.Storage[0].ByClass[cls] != before.Total {
		t.Fatalf("storage classes %v, want %d under %s", r.Storage[0].ByClass, before.Total, cls)
	}
	// KMS v2 with the KDF (default since 1.29): every value carries an HKDF seed, not a raw DEK.
	if got := r.Storage[0].ByDEKSource["HKDF_SHA256_XNONCE_AES_GCM_SEED"]; got != before.Total {
		t.Fatalf("DEK source types %v, want %d HKDF seeds", r.Storage[0].ByDEKSource, before.Total)
	}

	s := mustRun(t, c.RestConfig("admin"), nil)
	// Counted from the rotation: the API server's new DEK seed, the verifier's canary, the run.
	encryptsDuringRun := st.Server().Calls("Encrypt") - encrypts
	t.Logf("KMS Encrypt calls from the rotation to the end of re-encrypting %d Secrets: %d (GenerateDataKey %d, Decrypt %d in total)",
		s.Total.Rewritten, encryptsDuringRun, st.Server().Calls("GenerateDataKey"), st.Server().Calls("Decrypt"))
	if s.Total.Rewritten != int64(before.Total) || s.Total.Failed != 0 {
		t.Fatalf("summary %+v, want %d rewritten", s.Total, before.Total)
	}
	if encryptsDuringRun > 5 {
		t.Fatalf("%d KMS Encrypt calls for %d Secrets: KMS v2 should reuse its DEK", encryptsDuringRun, s.Total.Rewritten)
	}
	after := kmsScan(t, c, v2)
	if after.Stale() != 0 {
		t.Fatalf("after the run %d values are not under %s: %v", after.Stale(), v2, after.Offenders)
	}

	// As rekey verify does: the replicas are discovered (one here, learned from the API server's
	// Leases), so the convergence layer can say the pass covered every one of them.
	set, err := replicas.Discover(context.Background(), c.RestConfig("admin"), replicas.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	in.Replicas = set
	in.Convergence = convergenceEngine(t, c)
	r = mustVerify(t, in)
	if r.Verdict != verify.Pass {
		t.Fatalf("verify after the run: %s", r.Verdict)
	}
	for _, layer := range []string{verify.LayerKMS, verify.LayerStorage, verify.LayerConvergence, verify.LayerAPIServer, verify.LayerAudit} {
		if got := r.Layer(layer).Status; got != verify.Pass {
			t.Errorf("layer %s = %s, want PASS", layer, got)
		}
	}
	if r.Convergence == nil || r.Convergence.Total.Rewritten != 0 {
		t.Fatalf("convergence pass rewrote objects: %+v", r.Convergence)
	}
	if r.Audit == nil || r.Audit.Calls["Encrypt "+v2] == 0 {
		t.Fatalf("audit facts %+v: want Encrypt calls with %s by the plugin role", r.Audit, v2)
	}
}

// TestKMSDisabledKey: a disabled key fails verification with the consequence named and rekey run
// refuses; enabling it passes again; a KMS API restart loses nothing.
func TestKMSDisabledKey(t *testing.T) {
	st, c := kmsCluster(t, true)
	data := createSecrets(t, typed(t, c), 100, "vault")
	in := verifyInputs(t, st, c)
	in.Trail = nil
	t.Setenv(kms.EnvAccessKeyID, st.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, st.Admin.AccessKeySecret)
	kubeconfig := t.TempDir() + "/admin"
	if err := c.WriteKubeconfig("admin", kubeconfig); err != nil {
		t.Fatal(err)
	}
	runArgs := []string{"run", "--kubeconfig", kubeconfig, "--kms-key-id", st.KeyID, "--kms-region", st.Region, "--kms-endpoint", st.Endpoint, "--kms-scheme", "HTTP"}

	if err := st.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	r := mustVerify(t, in)
	kmsLayer := strings.Join(r.Layer(verify.LayerKMS).Reasons, " ")
	if r.Verdict != verify.Fail || !strings.Contains(kmsLayer, st.KeyID) || !strings.Contains(kmsLayer, "cannot encrypt or decrypt") {
		t.Fatalf("disabled key: verdict %s, kms layer %q", r.Verdict, kmsLayer)
	}
	code, _, stderr := rekeyCLI(t, runArgs...)
	if code != cli.ExitUsage || !strings.Contains(stderr, "refusing to run") || !strings.Contains(stderr, "Disabled") {
		t.Fatalf("rekey run on a disabled key: exit %d, %q", code, stderr)
	}
	code, _, _ = rekeyCLI(t, "verify", "--kms-key-id", st.KeyID, "--kms-region", st.Region, "--kms-endpoint", st.Endpoint, "--kms-scheme", "HTTP", "--audit=false")
	if code != cli.ExitFailed {
		t.Fatalf("rekey verify on a disabled key: exit %d, want 1", code)
	}

	if err := st.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	if r := mustVerify(t, in); r.Verdict != verify.Pass {
		t.Fatalf("enabled again: verdict %s", r.Verdict)
	}
	if err := st.RestartKMS(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := rekeyCLI(t, runArgs...); code != cli.ExitOK {
		t.Fatalf("rekey run after the KMS restart: exit %d %s", code, stderr)
	}
	// Every Secret still decrypts after the restart (the API server asks the plugin, which asks KMS:
	// a fresh read forces Decrypt of the stored DEKs through the restarted KMS).
	cs := typed(t, c)
	list, err := cs.CoreV1().Secrets("vault").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != len(data) {
		t.Fatalf("list after restart: %v (%d items, want %d)", err, len(list.Items), len(data))
	}
	for _, s := range list.Items {
		if string(s.Data["v"]) != string(data["vault/"+s.Name]) {
			t.Fatalf("%s changed across the KMS restart", s.Name)
		}
	}
	if r := mustVerify(t, in); r.Verdict != verify.Pass {
		t.Fatalf("after the KMS restart: verdict %s", r.Verdict)
	}
}

// TestAuditWithoutEncryption: with encryption at rest off (identity only), the audit layer finds
// no event of the cluster using the key (a warning: a quiet cluster looks the same), and the
// storage layer sees plaintext values and fails.
func TestAuditWithoutEncryption(t *testing.T) {
	st, c := kmsCluster(t, false)
	createSecrets(t, typed(t, c), 20, "plain")
	r := mustVerify(t, verifyInputs(t, st, c))
	audit := strings.Join(r.Layer(verify.LayerAudit).Reasons, " ")
	if r.Verdict != verify.Fail || r.Layer(verify.LayerAudit).Status != verify.Warn || !strings.Contains(audit, "no event in the window") {
		t.Fatalf("verdict %s, audit layer %q, want FAIL and a WARN with no event in the window", r.Verdict, audit)
	}
	if !strings.Contains(strings.Join(r.Layer(verify.LayerStorage).Reasons, " "), "unencrypted (identity)") {
		t.Fatalf("storage layer should report identity values: %v", r.Layer(verify.LayerStorage).Reasons)
	}
}
