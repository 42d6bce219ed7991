package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// adoptionCluster is a KMS v2 control plane with token user "rekey" bound by the shipped RBAC
// (infra/rbac/rekey.yaml); withMetrics false leaves out its optional /metrics grant.
func adoptionCluster(t *testing.T, withMetrics bool) (*kmsstack.Stack, *controlplane.Cluster, string) {
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
		Users:      []controlplane.User{{Name: "rekey", Token: "rekey-token"}},
	})
	applyRBACFile(t, c, func(kind, name string) bool { return withMetrics || name != "rekey-metrics" })
	kubeconfig := filepath.Join(t.TempDir(), "rekey")
	if err := c.WriteKubeconfig("rekey", kubeconfig); err != nil {
		t.Fatal(err)
	}
	t.Setenv(kms.EnvAccessKeyID, st.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, st.Admin.AccessKeySecret)
	return st, c, kubeconfig
}

// applyRBACFile creates every object of infra/rbac/rekey.yaml that keep accepts.
func applyRBACFile(t *testing.T, c *controlplane.Cluster, keep func(kind, name string) bool) {
	t.Helper()
	applyRBACYAML(t, c, "../../infra/rbac/rekey.yaml", keep)
}

// applyRBACYAML creates, as the admin, every object of the RBAC (or APF) file at path that keep
// accepts (nil: all of them), the functions' role ID filled in.
func applyRBACYAML(t *testing.T, c *controlplane.Cluster, path string, keep func(kind, name string) bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte(twin.RoleIDPlaceholder), []byte(functionUser))
	cs := typed(t, c)
	ctx := context.Background()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode %s: %v", path, err)
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			t.Fatal(err)
		}
		if keep != nil && !keep(gvk.Kind, m.GetName()) {
			continue
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = cs.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *flowcontrolv1.PriorityLevelConfiguration:
			_, err = cs.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, o, metav1.CreateOptions{})
		case *flowcontrolv1.FlowSchema:
			_, err = cs.FlowcontrolV1().FlowSchemas().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: unexpected %s", path, gvk)
		}
		if err != nil {
			t.Fatalf("apply %s %s: %v", gvk.Kind, m.GetName(), err)
		}
	}
}

// gatedReport is the JSON of `rekey run --output json` with the adoption evidence.
type gatedReport struct {
	reencrypt.Summary
	Adoption *adoption.Evidence `json:"adoption"`
}

func runGated(t *testing.T, st *kmsstack.Stack, kubeconfig string, extra ...string) (int, gatedReport, string) {
	t.Helper()
	args := append([]string{"run", "--kubeconfig", kubeconfig, "--kms-key-id", st.KeyID, "--kms-region", st.Region,
		"--kms-endpoint", st.Endpoint, "--kms-scheme", "HTTP", "--output", "json"}, extra...)
	code, stdout, stderr := rekeyCLI(t, args...)
	var r gatedReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("rekey run --output json: %v (exit %d, stderr %s)", err, code, stderr)
	}
	return code, r, stderr
}

// runTooEarly rotates the key and at once runs rekey with extra flags: the run must wait for the
// API server to adopt the new version (by the evidence want), then rewrite every Secret, and etcd
// must hold all of them under the new version.
func runTooEarly(t *testing.T, st *kmsstack.Stack, c *controlplane.Cluster, kubeconfig string, n int, want adoption.Kind, extra ...string) gatedReport {
	t.Helper()
	v1, err := st.PrimaryVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := kmsScan(t, c, v1); r.Stale() != 0 {
		t.Fatalf("before the rotation %d values are not under %s", r.Stale(), v1)
	}
	v2, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	code, r, stderr := runGated(t, st, kubeconfig, extra...)
	took := time.Since(rotated)
	if code != cli.ExitOK {
		t.Fatalf("run after the rotation: exit %d: %s", code, stderr)
	}
	if r.Adoption == nil || r.Adoption.Kind != want || r.Adoption.Version != v2 || !r.Adoption.Direct {
		t.Fatalf("adoption evidence %+v, want %s proving %s", r.Adoption, want, v2)
	}
	t.Logf("time to adoption by %s evidence: %.1fs (gate), run finished %.1fs after the rotation; %d samples, %d confirmations, %d changes, tried %v",
		want, r.Adoption.WaitedSeconds, took.Seconds(), r.Adoption.Samples, r.Adoption.Confirmations, r.Adoption.Changes, r.Adoption.Tried)
	if r.Total.Failed != 0 || r.Total.Rewritten < int64(n) {
		t.Fatalf("summary %+v: want every one of the %d Secrets rewritten", r.Total, n)
	}
	after := kmsScan(t, c, v2)
	if after.Stale() != 0 || after.Total < n {
		t.Fatalf("after the run %d of %d values are not under %s: %v", after.Stale(), after.Total, v2, after.Offenders)
	}
	return r
}

// TestAdoptionRunTooEarlyEtcd: with etcd readable the gate proves adoption from canary writes read
// back from etcd.
func TestAdoptionRunTooEarlyEtcd(t *testing.T) {
	st, c, kubeconfig := adoptionCluster(t, true)
	createSecrets(t, typed(t, c), 300, "early-etcd")
	runTooEarly(t, st, c, kubeconfig, 300, adoption.Etcd, "--etcd-endpoints", c.EtcdEndpoint)
}

// TestAdoptionRunTooEarlyMetrics: without etcd, an identity that may GET /metrics proves adoption
// from the KMS v2 key-ID-hash series.
func TestAdoptionRunTooEarlyMetrics(t *testing.T) {
	st, c, kubeconfig := adoptionCluster(t, true)
	createSecrets(t, typed(t, c), 300, "early-metrics")
	r := runTooEarly(t, st, c, kubeconfig, 300, adoption.Metrics)
	if len(r.Adoption.Tried) != 1 || r.Adoption.Tried[0].Kind != adoption.Etcd || r.Adoption.Replicas != 1 {
		t.Fatalf("tried %+v, replicas %d: want etcd unavailable and one API server", r.Adoption.Tried, r.Adoption.Replicas)
	}
}

// TestAdoptionRunTooEarlyCanary: without etcd or /metrics, the first run can only settle (and
// records the effect canaries); after a rotation the canaries prove adoption.
func TestAdoptionRunTooEarlyCanary(t *testing.T) {
	st, c, kubeconfig := adoptionCluster(t, false)
	createSecrets(t, typed(t, c), 300, "early-canary")

	_, first, stderr := runGated(t, st, kubeconfig, "--adoption-settle", "2s")
	if first.Adoption == nil || first.Adoption.Kind != adoption.Settle || first.Adoption.Recorded != adoption.DefaultCanaries {
		t.Fatalf("first run: adoption %+v (%s); want settle with the canaries recorded", first.Adoption, stderr)
	}
	tried := ""
	for _, a := range first.Adoption.Tried {
		tried += string(a.Kind) + ": " + a.Reason + "\n"
	}
	if !strings.Contains(tried, "etcd: ") || !strings.Contains(tried, "metrics: ") || !strings.Contains(tried, "canary: no canary can prove the rotation: none exists yet") {
		t.Fatalf("first run tried:\n%s", tried)
	}

	r := runTooEarly(t, st, c, kubeconfig, 300, adoption.Canary)
	if r.Adoption.Changes == 0 {
		t.Fatalf("canary evidence without a canary rewrite: %+v", r.Adoption)
	}
	// A re-run passes the gate at once: the canaries are recorded under the new version.
	code, again, stderr := runGated(t, st, kubeconfig)
	if code != cli.ExitOK || again.Adoption == nil || again.Adoption.Kind != adoption.Canary || again.Adoption.Changes != 0 || again.Adoption.WaitedSeconds > 10 {
		t.Fatalf("re-run: exit %d, adoption %+v: %s", code, again.Adoption, stderr)
	}
	t.Logf("re-run passed the gate in %.2fs", again.Adoption.WaitedSeconds)
}
