package e2e

import (
	"testing"

	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/infra/local/faultproxy"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// TestEngineLostResponseAfterApply: a proxy forwards one patch in seven to the API server, which
// applies it, and then drops the answer. rekey retries, gets 409 (the resourceVersion moved under
// its own write), re-reads and patches again, which changes nothing. Those objects were rewritten,
// and the summary must say so: every stale Secret counted rewritten, none current, matching the
// etcd scan.
func TestEngineLostResponseAfterApply(t *testing.T) {
	c, key1 := aescbcCluster(t)
	const n, ns = 200, "lost"
	createSecrets(t, typed(t, c), n, ns)
	rotate(t, c, key1)
	if r := scanPrefix(t, c, ns); r.Total != n || r.Stale() != n {
		t.Fatalf("before the run: %+v, want %d stale", r.ByClass, n)
	}

	p, err := faultproxy.Start(c.Server, c.CAData)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.SetRules(faultproxy.Rule{Method: "PATCH", PathContains: "/secrets/", Every: 7, Fail: 1, ForwardThenDrop: true})
	cfg := c.RestConfig("admin")
	cfg.Host, cfg.TLSClientConfig = p.URL(), rest.TLSClientConfig{} // plain HTTP to the loopback proxy
	s := mustRun(t, cfg, func(o *reencrypt.Options) {
		o.Namespaces = []string{ns}
		o.Concurrency = 8
	})
	t.Logf("%d answers dropped after the patch was applied", p.Injected())
	if p.Injected() < 20 {
		t.Fatalf("only %d answers dropped; the fault did not happen", p.Injected())
	}
	if s.Conflicts == 0 {
		// A retry's answer (the 409) may be dropped too, so there are at most as many conflicts
		// as lost answers, and at least one.
		t.Fatalf("no conflicts for %d lost answers: the retry of an applied patch must conflict", p.Injected())
	}
	if s.Total != (reencrypt.Counts{Listed: n, Rewritten: n}) || !s.OK() {
		t.Fatalf("summary %+v, want all %d rewritten and none current", s.Total, n)
	}
	if r := scanPrefix(t, c, ns); r.Total != n || r.Matching != n {
		t.Fatalf("after the run: %+v offenders %v, want all %d under key2", r.ByClass, r.Offenders, n)
	}
}
