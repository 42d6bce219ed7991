package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

const (
	frozenLabel     = "rekey-e2e/frozen"
	frozenForbidden = "frozen Secret: updates are forbidden"
	frozenInvalid   = "frozen Secret: updates are invalid"
)

// freezePolicy installs a ValidatingAdmissionPolicy and binding that deny UPDATE of Secrets
// labelled frozenLabel: "forbidden" with reason Forbidden (HTTP 403), "invalid" with the default
// reason Invalid (HTTP 422).
func freezePolicy(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	forbidden := metav1.StatusReasonForbidden
	fail := admissionv1.Fail
	notLabelled := func(v string) string {
		return fmt.Sprintf("!has(object.metadata.labels) || !(%q in object.metadata.labels) || object.metadata.labels[%q] != %q", frozenLabel, frozenLabel, v)
	}
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "rekey-e2e-frozen"},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Update},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}},
				},
			}}},
			Validations: []admissionv1.Validation{
				{Expression: notLabelled("forbidden"), Message: frozenForbidden, Reason: &forbidden},
				{Expression: notLabelled("invalid"), Message: frozenInvalid},
			},
		},
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "rekey-e2e-frozen"},
		Spec:       admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}},
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create binding: %v", err)
	}
}

// waitPolicy polls, with a bound, until the policy denies an update of a frozen probe Secret.
func waitPolicy(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; ; i++ {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"probe":"%d"}}}`, i)
		_, err := cs.CoreV1().Secrets(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil && strings.Contains(err.Error(), frozenForbidden) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("policy not enforced within a minute (last answer: %v)", err)
		}
		time.Sleep(200 * time.Millisecond) // polling a condition in a test, bounded by ctx
	}
}

func labelFrozen(t *testing.T, cs kubernetes.Interface, ns, name, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, frozenLabel, value)
	if _, err := cs.CoreV1().Secrets(ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label %s/%s: %v", ns, name, err)
	}
}

// scanPrefix classifies the Secrets stored under one namespace against key2.
func scanPrefix(t *testing.T, c *controlplane.Cluster, ns string) etcdscan.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := etcdscan.Scan(ctx, c.Etcd, "/registry/secrets/"+ns+"/", underKey2, etcdscan.Options{})
	if err != nil {
		t.Fatalf("scan etcd: %v", err)
	}
	return r
}

// TestEngineAdmissionPolicyDenial: a ValidatingAdmissionPolicy denies updates of two labelled
// Secrets per namespace (one with 403 Forbidden, one with 422 Invalid). rekey, under the shipped
// RBAC, fails exactly those Secrets with the policy's message, rewrites every other one and is not
// cancelled, both when an access review tells the 403 from an RBAC denial and when the message
// alone does.
func TestEngineAdmissionPolicyDenial(t *testing.T) {
	c, key1 := aescbcCluster(t, controlplane.User{Name: "rekey", Token: "rekey-token"})
	cs := typed(t, c)
	applyShippedRBAC(t, c)
	namespaces := []string{"adm-review", "adm-message"}
	createSecrets(t, cs, 80, namespaces...)
	// seed.Secrets names secret-NNNNN round-robin: 0 and 2 land in the first namespace, 1 and 3
	// in the second.
	frozen := map[string]string{} // ns/name -> message
	stale := map[string]bool{}    // what must stay stale in etcd
	for i, ns := range namespaces {
		a, b := fmt.Sprintf("secret-%05d", i), fmt.Sprintf("secret-%05d", i+2)
		labelFrozen(t, cs, ns, a, "forbidden")
		labelFrozen(t, cs, ns, b, "invalid")
		frozen[ns+"/"+a], frozen[ns+"/"+b] = frozenForbidden, frozenInvalid
		stale[ns+"/"+a], stale[ns+"/"+b] = true, true
	}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "adm-probe"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "adm-probe", Labels: map[string]string{frozenLabel: "forbidden"}}}
	if _, err := cs.CoreV1().Secrets("adm-probe").Create(context.Background(), probe, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rotate(t, c, key1)
	freezePolicy(t, cs)
	waitPolicy(t, cs, "adm-probe", "probe")

	cfg := c.RestConfig("rekey")
	authz, err := authzclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range namespaces {
		before := scanPrefix(t, c, ns)
		s, err := engineRun(t, cfg, func(o *reencrypt.Options) {
			o.Namespaces = []string{ns}
			o.Concurrency = 8
			if ns == "adm-review" {
				o.AccessCheck = reencrypt.SelfSubjectAccessReview(authz)
			}
		})
		t.Logf("%s: %+v complete=%v failures=%+v", ns, s.Total, s.Complete, s.Failures)
		var pe *reencrypt.PermissionError
		if err != nil || errors.As(err, &pe) || !s.Complete {
			t.Fatalf("%s: run stopped: %v; an admission denial must not cancel the run", ns, err)
		}
		if s.Total != (reencrypt.Counts{Listed: 40, Rewritten: 38, Failed: 2}) || s.OK() {
			t.Fatalf("%s: summary %+v, want 38 rewritten and the 2 frozen Secrets failed", ns, s.Total)
		}
		for _, f := range s.Failures {
			msg, ok := frozen[f.Namespace+"/"+f.Name]
			if !ok || !strings.Contains(f.Reason, msg) || !strings.Contains(f.Reason, "rekey-e2e-frozen") {
				t.Fatalf("%s: failure %+v, want a frozen Secret with the policy's message", ns, f)
			}
			delete(frozen, f.Namespace+"/"+f.Name)
		}
		after := scanPrefix(t, c, ns)
		if before.Stale() != 40 || after.Total != 40 || after.Matching != 38 || after.Stale() != 2 {
			t.Fatalf("%s: etcd before %d stale, after %+v offenders %v; want the 2 frozen Secrets stale, 38 under key2", ns, before.Stale(), after.ByClass, after.Offenders)
		}
		for _, o := range after.Offenders {
			if !stale[ns+"/"+o] { // names are relative to the scanned prefix
				t.Fatalf("%s: %s is still stale, but only the frozen Secrets may be", ns, o)
			}
		}
	}
	if len(frozen) != 0 {
		t.Fatalf("frozen Secrets not reported: %v", frozen)
	}
}
