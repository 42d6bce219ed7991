package e2e

import (
	"net/http"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/state"
)

// functionRBAC is the RBAC shipped for the FC functions.
const functionRBAC = "../../infra/rbac/rekey-function.yaml"

// functionUser is the subject functionRBAC binds (its RAM role ID placeholder filled in): a numeric
// RAM role ID, as ACK names the functions' identity.
const functionUser = twin.FunctionUser

// applyFunctionRBAC applies every object of infra/rbac/rekey-function.yaml as the admin.
func applyFunctionRBAC(t *testing.T, c *controlplane.Cluster) {
	t.Helper()
	applyRBACYAML(t, c, functionRBAC, nil)
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
