package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/etcdscan/etcdtest"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/verify"
)

// kmsClusterEncrypting is kmsCluster with the resources the KMS v2 provider encrypts given.
func kmsClusterEncrypting(t *testing.T, resources ...string) (*kmsstack.Stack, *controlplane.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := kmsstack.Start(ctx, kmsstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	c := controlplane.StartT(t, controlplane.Options{Encryption: &controlplane.Encryption{
		Resources: resources,
		Providers: []controlplane.Provider{st.Provider(), controlplane.Identity()},
	}})
	return st, c
}

// verifyCLI runs `rekey verify ... -o json` as a user would, with the KMS stand-in's admin
// credentials in the environment, and decodes the report.
func verifyCLI(t *testing.T, st *kmsstack.Stack, args ...string) (int, verify.Report, string) {
	t.Helper()
	t.Setenv("KUBECONFIG", "")
	t.Setenv(kms.EnvAccessKeyID, st.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, st.Admin.AccessKeySecret)
	t.Setenv(kms.EnvSecurityToken, "")
	code, stdout, stderr := rekeyCLI(t, append([]string{"verify", "-o", "json"}, args...)...)
	var r verify.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("rekey verify: exit %d, no JSON report (%v); stderr %s", code, err, stderr)
	}
	return code, r, stderr
}

// kmsFlags are the flags that point rekey at the stand-in's key.
func kmsFlags(st *kmsstack.Stack) []string {
	return []string{"--kms-key-id", st.KeyID, "--kms-region", st.Region, "--kms-endpoint", st.Endpoint, "--kms-scheme", "HTTP", "--actiontrail-endpoint", st.Endpoint}
}

func layerText(r verify.Report, layer string) string {
	return strings.Join(r.Layer(layer).Reasons, "\n")
}

func storageFor(t *testing.T, r verify.Report, prefix string) etcdscan.Report {
	t.Helper()
	for _, s := range r.Storage {
		if s.Prefix == prefix {
			return s
		}
	}
	t.Fatalf("no scan of %s in the report: %+v", prefix, r.Storage)
	return etcdscan.Report{}
}

func createDeployments(t *testing.T, c *controlplane.Cluster, ns string, n int) {
	t.Helper()
	cs := typed(t, c)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "web"}
	for i := range n {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", i)},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1"}}},
				},
			},
		}
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyStoragePaths: on a KMS v2 cluster that encrypts Secrets and Deployments, `rekey verify`
// reads deployments.apps from /registry/deployments/ (with discovery and without a kubeconfig) and
// PASSes; pointed at an empty --etcd-prefix, or at a second etcd that holds only events, it FAILs
// with exit 1 and says what it scanned.
func TestVerifyStoragePaths(t *testing.T) {
	st, c := kmsClusterEncrypting(t, "secrets", "deployments.apps")
	createSecrets(t, typed(t, c), 30, "vault")
	createDeployments(t, c, "shop", 4)
	kubeconfig := t.TempDir() + "/admin"
	if err := c.WriteKubeconfig("admin", kubeconfig); err != nil {
		t.Fatal(err)
	}
	etcdFlags := []string{"--etcd-endpoints", c.EtcdEndpoint}

	// With a kubeconfig "deployments" is resolved through discovery (to apps), every default layer
	// runs, and the report names them.
	args := append(append([]string{"--kubeconfig", kubeconfig, "--resources", "secrets,deployments"}, etcdFlags...), kmsFlags(st)...)
	code, r, _ := verifyCLI(t, st, args...)
	if code != cli.ExitOK || r.Verdict != verify.Pass {
		t.Fatalf("verify with discovery: exit %d verdict %s %v\n%s", code, r.Verdict, r.Reasons, layerText(r, verify.LayerStorage))
	}
	if got := strings.Join(r.RequestedLayers, ","); got != "kms,storage,apiserver,audit" || !r.LayersDefaulted {
		t.Fatalf("layers %s (defaulted %v), want kms,storage,apiserver,audit by default", got, r.LayersDefaulted)
	}
	deployments := storageFor(t, r, "/registry/deployments/")
	if deployments.Total < 4 || deployments.Stale() != 0 {
		t.Fatalf("deployments scan %+v: want at least 4 values, all current", deployments)
	}
	if secrets := storageFor(t, r, "/registry/secrets/"); secrets.Total < 30 {
		t.Fatalf("secrets scan %+v: want at least 30 values", secrets)
	}
	if n := storageFor(t, r, "/registry/deployments/").ByClass[fmt.Sprintf("kms-v2:%s:%s", kmsstack.ProviderName, r.Key.PrimaryKeyVersion)]; n != deployments.Total {
		t.Fatalf("deployments classes %v: want every value under the primary version", deployments.ByClass)
	}

	// Without a kubeconfig, "deployments.apps" maps by the same table.
	args = append(append([]string{"--resources", "deployments.apps", "--layers", "kms,storage"}, etcdFlags...), kmsFlags(st)...)
	code, r, _ = verifyCLI(t, st, args...)
	if code != cli.ExitOK || r.Verdict != verify.Pass || storageFor(t, r, "/registry/deployments/").Total != deployments.Total {
		t.Fatalf("verify deployments.apps without a kubeconfig: exit %d verdict %s, storage %+v", code, r.Verdict, r.Storage)
	}
	if got := strings.Join(r.RequestedLayers, ","); got != "kms,storage" || r.LayersDefaulted {
		t.Fatalf("layers %s (defaulted %v), want kms,storage as listed", got, r.LayersDefaulted)
	}

	// The wrong --etcd-prefix: nothing scanned is a FAIL, with what was scanned and why.
	args = append(append([]string{"--etcd-prefix", "/nothing"}, etcdFlags...), kmsFlags(st)...)
	code, r, _ = verifyCLI(t, st, args...)
	storage := layerText(r, verify.LayerStorage)
	if code != cli.ExitFailed || r.Verdict != verify.Fail || r.Layer(verify.LayerStorage).Status != verify.Fail ||
		!strings.Contains(storage, "scanned 0 values under /nothing/secrets/") || !strings.Contains(storage, "another --etcd-prefix") {
		t.Fatalf("verify --etcd-prefix /nothing: exit %d verdict %s\n%s", code, r.Verdict, storage)
	}

	// A second etcd that holds only events, as an --etcd-servers-overrides events etcd does.
	events := etcdtest.Start(t)
	for i := range 3 {
		if _, err := events.Put(context.Background(), fmt.Sprintf("/registry/events/default/e-%d", i), "k8s\x00event"); err != nil {
			t.Fatal(err)
		}
	}
	args = append([]string{"--etcd-endpoints", "http://" + events.Endpoints()[0]}, kmsFlags(st)...)
	code, r, _ = verifyCLI(t, st, args...)
	storage = layerText(r, verify.LayerStorage)
	if code != cli.ExitFailed || !strings.Contains(storage, "scanned 0 values under /registry/secrets/") || !strings.Contains(storage, "events etcd") {
		t.Fatalf("verify against the events etcd: exit %d\n%s", code, storage)
	}
}

// TestVerifyIdentitySecretsFail: with encryption at rest off, the Secrets in etcd are plaintext
// and `rekey verify` FAILs on the storage layer with and without --kms-key-id, even though the key
// itself is healthy and the audit layer only warns.
func TestVerifyIdentitySecretsFail(t *testing.T) {
	st, c := kmsCluster(t, false)
	createSecrets(t, typed(t, c), 25, "plain")
	etcdFlags := []string{"--etcd-endpoints", c.EtcdEndpoint}

	code, r, _ := verifyCLI(t, st, etcdFlags...)
	storage := layerText(r, verify.LayerStorage)
	if code != cli.ExitFailed || r.Verdict != verify.Fail || !strings.Contains(storage, "stored unencrypted (identity)") {
		t.Fatalf("verify without a key: exit %d verdict %s\n%s", code, r.Verdict, storage)
	}

	code, r, _ = verifyCLI(t, st, append(etcdFlags, kmsFlags(st)...)...)
	storage = layerText(r, verify.LayerStorage)
	if code != cli.ExitFailed || r.Verdict != verify.Fail || r.Layer(verify.LayerKMS).Status != verify.Pass ||
		!strings.Contains(storage, "stored unencrypted (identity)") {
		t.Fatalf("verify with a key: exit %d verdict %s, kms %s\n%s", code, r.Verdict, r.Layer(verify.LayerKMS).Status, storage)
	}
	if got := storageFor(t, r, "/registry/secrets/"); got.ByClass["identity"] < 25 || got.Stale() != got.Total {
		t.Fatalf("secrets scan %+v: want every value identity and stale", got)
	}
	if a := r.Layer(verify.LayerAudit); a.Status == verify.Fail {
		t.Fatalf("audit layer FAILed a cluster whose key is simply unused: %v", a.Reasons)
	}
}
