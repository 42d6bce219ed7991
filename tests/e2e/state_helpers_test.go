package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/state"
)

// functionRBAC is the RBAC shipped for the FC functions.
const functionRBAC = "../../infra/rbac/rekey-function.yaml"

// functionUser is the subject functionRBAC binds.
const functionUser = "rekey-function"

// applyFunctionRBAC applies every object of infra/rbac/rekey-function.yaml as the admin.
func applyFunctionRBAC(t *testing.T, c *controlplane.Cluster) {
	t.Helper()
	f, err := os.Open(functionRBAC)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cs := typed(t, c)
	ctx := context.Background()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
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
			t.Fatalf("decode %s: %v", functionRBAC, err)
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			t.Fatal(err)
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
		default:
			t.Fatalf("%s: unexpected %s", functionRBAC, gvk)
		}
		if err != nil {
			t.Fatalf("apply %s %s: %v", gvk.Kind, m.GetName(), err)
		}
	}
}

// conflictCounter counts 409 answers of the API server.
type conflictCounter struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c conflictCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusConflict {
		c.n.Add(1)
	}
	return resp, err
}

// userClient is a clientset of its own (one per simulated invocation) for user; conflicts, when
// non-nil, counts the 409s it receives.
func userClient(t *testing.T, c *controlplane.Cluster, user string, conflicts *atomic.Int64) kubernetes.Interface {
	t.Helper()
	cfg := c.RestConfig(user)
	cfg.QPS, cfg.Burst = -1, 0
	if conflicts != nil {
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return conflictCounter{next: rt, n: conflicts} }
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// stateStore is a Store of cluster on cs with clk (nil: the real clock).
func stateStore(t *testing.T, cs kubernetes.Interface, cluster string, clk clock.PassiveClock) *state.Store {
	t.Helper()
	opts := []state.Option{}
	if clk != nil {
		opts = append(opts, state.WithClock(clk))
	}
	s, err := state.New(cs, cluster, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
