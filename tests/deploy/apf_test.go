package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// manifests decodes every object of the YAML file at path (relative to the repository root).
func manifests(t *testing.T, path string) []any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, obj)
	}
}

// TestAPFCoversExactlyTheRBACIdentities: infra/apf/rekey-apf.yaml classifies exactly the users the
// RBAC files bind (the CLI's and the functions' role ID), into a queuing priority level of its own
// that it defines (a small share, bounded borrowing), ahead of the built-in service-accounts and global-default schemas and behind
// the system ones.
func TestAPFCoversExactlyTheRBACIdentities(t *testing.T) {
	var bound []string
	for _, f := range []string{"infra/rbac/rekey.yaml", "infra/rbac/rekey-function.yaml"} {
		for _, o := range manifests(t, f) {
			var subjects []rbacv1.Subject
			switch b := o.(type) {
			case *rbacv1.RoleBinding:
				subjects = b.Subjects
			case *rbacv1.ClusterRoleBinding:
				subjects = b.Subjects
			}
			for _, s := range subjects {
				if s.Kind == rbacv1.UserKind && !slices.Contains(bound, s.Name) {
					bound = append(bound, s.Name)
				}
			}
		}
	}
	var schemas []*flowcontrolv1.FlowSchema
	levels := map[string]*flowcontrolv1.PriorityLevelConfiguration{}
	for _, o := range manifests(t, "infra/apf/rekey-apf.yaml") {
		switch x := o.(type) {
		case *flowcontrolv1.FlowSchema:
			schemas = append(schemas, x)
		case *flowcontrolv1.PriorityLevelConfiguration:
			levels[x.Name] = x
		default:
			t.Fatalf("infra/apf/rekey-apf.yaml: unexpected %T", o)
		}
	}
	if len(schemas) != 1 {
		t.Fatalf("%d FlowSchemas, want 1", len(schemas))
	}
	fs := schemas[0]
	var users []string
	for _, r := range fs.Spec.Rules {
		for _, s := range r.Subjects {
			if s.Kind != flowcontrolv1.SubjectKindUser || s.User == nil {
				t.Fatalf("FlowSchema subject %+v: rekey's identities are users", s)
			}
			users = append(users, s.User.Name)
		}
	}
	slices.Sort(users)
	slices.Sort(bound)
	if !slices.Equal(users, bound) || len(bound) < 2 {
		t.Fatalf("FlowSchema users %v, RBAC users %v: want the same (the CLI's and the functions')", users, bound)
	}
	pl, ok := levels[fs.Spec.PriorityLevelConfiguration.Name]
	if !ok {
		t.Fatalf("FlowSchema points at priority level %q, not defined in the file", fs.Spec.PriorityLevelConfiguration.Name)
	}
	// Few seats of its own, some of the spare capacity when other levels lend it, never all of it:
	// the bench (make bench-politeness) measured unlimited borrowing at 1.3x the foreground's p99.
	if l := pl.Spec.Limited; pl.Spec.Type != flowcontrolv1.PriorityLevelEnablementLimited || l == nil ||
		l.LimitResponse.Type != flowcontrolv1.LimitResponseTypeQueue || l.NominalConcurrencyShares == nil || *l.NominalConcurrencyShares > 5 ||
		l.BorrowingLimitPercent == nil || *l.BorrowingLimitPercent <= 0 || *l.BorrowingLimitPercent > 200 {
		t.Fatalf("priority level %+v: want Limited, queuing, a small nominal share (<= 5) and bounded borrowing (1-200%%)", pl.Spec)
	}
	if p := fs.Spec.MatchingPrecedence; p <= 1000 || p >= 9000 {
		t.Fatalf("matchingPrecedence %d: want after the system schemas (<= 1000) and before service-accounts (9000)", p)
	}
}
