package cluster

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

var (
	secretsT     = reencrypt.Target{Name: "secrets", GVR: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}}
	deploymentsT = reencrypt.Target{Name: "deployments.apps", GVR: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}}
)

// reviewer answers SelfSubjectAccessReviews from a set of allowed "verb group/resource ns" and
// records every question.
type reviewer struct {
	mu      sync.Mutex
	allowed map[string]bool
	asked   []string
	err     error
}

func (r *reviewer) client() *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		review := a.(clienttesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		ra := review.Spec.ResourceAttributes
		k := ra.Verb + " " + ra.Group + "/" + ra.Resource + " " + ra.Namespace
		r.mu.Lock()
		defer r.mu.Unlock()
		r.asked = append(r.asked, k)
		if r.err != nil {
			return true, nil, r.err
		}
		review.Status.Allowed = r.allowed[k]
		return true, review, nil
	})
	return cs
}

func TestVerbs(t *testing.T) {
	if got := Verbs(true); !reflect.DeepEqual(got, []string{"list"}) {
		t.Errorf("dry run verbs = %v", got)
	}
	if got := Verbs(false); !reflect.DeepEqual(got, []string{"list", "get", "patch"}) {
		t.Errorf("run verbs = %v", got)
	}
}

func TestCheckAccessAllowed(t *testing.T) {
	r := &reviewer{allowed: map[string]bool{"list /secrets ": true, "get /secrets ": true, "patch /secrets ": true}}
	if err := CheckAccess(context.Background(), r.client().AuthorizationV1(), []reencrypt.Target{secretsT}, nil, Verbs(false)); err != nil {
		t.Fatalf("CheckAccess: %v", err)
	}
	if want := []string{"list /secrets ", "get /secrets ", "patch /secrets "}; !reflect.DeepEqual(r.asked, want) {
		t.Fatalf("asked %v, want %v (all namespaces, each verb)", r.asked, want)
	}
}

func TestCheckAccessNamesEveryMissingPermission(t *testing.T) {
	r := &reviewer{allowed: map[string]bool{
		"list /secrets a": true, "get /secrets a": true, "patch /secrets a": true,
		"list /secrets b": true, "get /secrets b": true,
		"list apps/deployments a": true, "get apps/deployments a": true, "patch apps/deployments a": true,
		"list apps/deployments b": true, "get apps/deployments b": true, "patch apps/deployments b": true,
	}}
	err := CheckAccess(context.Background(), r.client().AuthorizationV1(), []reencrypt.Target{secretsT, deploymentsT}, []string{"a", "b"}, Verbs(false))
	var ae *AccessError
	if !errors.As(err, &ae) || !reflect.DeepEqual(ae.Missing, []string{"patch secrets (namespace b)"}) {
		t.Fatalf("err = %v, want exactly patch secrets in b missing", err)
	}
	if !strings.Contains(err.Error(), "patch secrets (namespace b)") || !strings.Contains(err.Error(), "RBAC") {
		t.Fatalf("message %q", err)
	}
	if len(r.asked) != 2*2*3 {
		t.Fatalf("%d reviews, want 12 (2 resources x 2 namespaces x 3 verbs)", len(r.asked))
	}

	r = &reviewer{allowed: map[string]bool{}}
	err = CheckAccess(context.Background(), r.client().AuthorizationV1(), []reencrypt.Target{secretsT}, nil, Verbs(true))
	if !errors.As(err, &ae) || !reflect.DeepEqual(ae.Missing, []string{"list secrets (all namespaces)"}) {
		t.Fatalf("dry run: err = %v, want list secrets (all namespaces) missing", err)
	}
}

func TestCheckAccessReviewError(t *testing.T) {
	r := &reviewer{err: errors.New("authorization webhook down")}
	err := CheckAccess(context.Background(), r.client().AuthorizationV1(), []reencrypt.Target{secretsT}, nil, Verbs(false))
	var ae *AccessError
	if err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "check list secrets access") {
		t.Fatalf("err = %v, want a wrapped API error, not an AccessError", err)
	}
}
