package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

func stateDecision(id string, jobs ...policy.Job) policy.Decision {
	return policy.Decision{Kind: policy.Rotate, Reason: "e2e", Event: events.DedupKey{Source: "acs.kms", ID: id}, Jobs: jobs}
}

func stateJob(cluster, key, version string) policy.Job {
	return policy.Job{Cluster: cluster, Key: key, Version: version, Reason: "CreateKeyVersion (e2e)", NotBefore: time.Now().Add(2 * time.Minute).Truncate(time.Second)}
}

// TestStateInClusterUnderFunctionRBAC runs shared/state on a real API server: first without
// permissions (the errors name what is missing), then as the identity bound by the shipped
// infra/rbac/rekey-function.yaml, which must be enough for every state operation (Lease contention
// and expiry, concurrent Records, checkpoint optimistic concurrency, job completion) and grant
// nothing beyond its list.
func TestStateInClusterUnderFunctionRBAC(t *testing.T) {
	c := controlplane.StartT(t, controlplane.Options{Users: []controlplane.User{{Name: functionUser}, {Name: "nsless"}}})
	ctx := context.Background()

	// No RBAC yet: every error names the verb, the resource, the namespace and the file to apply.
	bare := stateStore(t, userClient(t, c, functionUser, nil), "c-bare", nil)
	_, err := bare.Record(ctx, stateDecision("ev-bare", stateJob("c-bare", "key-a", "v2")))
	for _, want := range []string{`"get" on configmaps`, "namespace " + state.Namespace, state.RBACFile} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Record without RBAC: %v; want an error naming %s", err, want)
		}
	}
	_, _, err = bare.TryAcquire(ctx, "inv-bare", time.Minute)
	if err == nil || !strings.Contains(err.Error(), `"get" on leases.coordination.k8s.io`) {
		t.Fatalf("TryAcquire without RBAC: %v; want an error naming the lease permission", err)
	}

	// An identity that may write ConfigMaps but not create namespaces, before rekey-system exists.
	grantRole(t, c, "nsless", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create", "update"}})
	nsless := stateStore(t, userClient(t, c, "nsless", nil), "c-nsless", nil)
	_, err = nsless.Record(ctx, stateDecision("ev-ns", stateJob("c-nsless", "key-a", "v2")))
	if err == nil || !strings.Contains(err.Error(), "namespace "+state.Namespace+" does not exist and the identity may not create it") {
		t.Fatalf("Record with the namespace missing: %v; want an error saying the namespace is missing and cannot be created", err)
	}

	// An identity that may create namespaces gets its namespace created on the first write.
	auto, err := state.New(typed(t, c), "c-auto", state.WithNamespace("rekey-auto"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auto.Record(ctx, stateDecision("ev-auto", stateJob("c-auto", "key-a", "v2"))); err != nil {
		t.Fatalf("Record as admin with the namespace missing: %v", err)
	}
	if _, err := typed(t, c).CoreV1().Namespaces().Get(ctx, "rekey-auto", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace not created: %v", err)
	}

	applyFunctionRBAC(t, c)
	fn := userClient(t, c, functionUser, nil)
	t.Run("rbac", func(t *testing.T) { stateRBACIsExact(t, fn) })
	t.Run("lease", func(t *testing.T) { stateLease(t, c) })
	t.Run("record", func(t *testing.T) { stateConcurrentRecord(t, c) })
	t.Run("checkpoint", func(t *testing.T) { stateCheckpoint(t, c) })
	t.Run("evidence", func(t *testing.T) { stateEvidence(t, c, fn) })
}

// grantRole gives user one cluster-wide rule.
func grantRole(t *testing.T, c *controlplane.Cluster, user string, rule rbacv1.PolicyRule) {
	t.Helper()
	cs := typed(t, c)
	ctx := context.Background()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user + "-rule"}, Rules: []rbacv1.PolicyRule{rule}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-rule"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: user, APIGroup: "rbac.authorization.k8s.io"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// stateRBACIsExact asks the API server what the function's identity may do: what the functions
// need, and not more.
func stateRBACIsExact(t *testing.T, cs kubernetes.Interface) {
	res := func(verb, group, resource, ns string) *authorizationv1.ResourceAttributes {
		return &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: ns}
	}
	url := func(path string) *authorizationv1.NonResourceAttributes {
		return &authorizationv1.NonResourceAttributes{Verb: "get", Path: path}
	}
	const sys = state.Namespace
	tests := []struct {
		r       *authorizationv1.ResourceAttributes
		u       *authorizationv1.NonResourceAttributes
		allowed bool
	}{
		{r: res("list", "", "secrets", ""), allowed: true},
		{r: res("get", "", "secrets", "payments"), allowed: true},
		{r: res("patch", "", "secrets", "payments"), allowed: true},
		{r: res("create", "", "secrets", sys), allowed: true},
		{r: res("get", "", "configmaps", sys), allowed: true},
		{r: res("create", "", "configmaps", sys), allowed: true},
		{r: res("update", "", "configmaps", sys), allowed: true},
		{r: res("delete", "", "configmaps", sys), allowed: true},
		{r: res("list", "", "configmaps", sys), allowed: true},
		{r: res("get", "coordination.k8s.io", "leases", sys), allowed: true},
		{r: res("create", "coordination.k8s.io", "leases", sys), allowed: true},
		{r: res("update", "coordination.k8s.io", "leases", sys), allowed: true},
		{u: url("/readyz/kms-providers"), allowed: true},
		{u: url("/metrics"), allowed: true},

		{r: res("update", "", "secrets", "payments")},
		{r: res("delete", "", "secrets", "payments")},
		{r: res("watch", "", "secrets", "")},
		{r: res("create", "", "secrets", "payments")},
		{r: res("list", "", "configmaps", "default")},
		{r: res("get", "", "configmaps", "kube-system")},
		{r: res("create", "", "configmaps", "default")},
		{r: res("list", "coordination.k8s.io", "leases", sys)},
		{r: res("delete", "coordination.k8s.io", "leases", sys)},
		{r: res("update", "coordination.k8s.io", "leases", "kube-system")},
		{r: res("create", "", "namespaces", "")},
		{r: res("get", "", "namespaces", "")},
		{u: url("/logs")},
	}
	for _, tt := range tests {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: tt.r, NonResourceAttributes: tt.u}}
		got, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), review, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != tt.allowed {
			what := ""
			if tt.r != nil {
				what = tt.r.Verb + " " + tt.r.Resource + "." + tt.r.Group + " in " + tt.r.Namespace
			} else {
				what = "get " + tt.u.Path
			}
			t.Errorf("%s: allowed=%v, want %v", what, got.Status.Allowed, tt.allowed)
		}
	}
}
