package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/cluster"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// TestEnginePanicOnOneObjectIsContained runs the engine against the real API server through a
// metadata client that panics when it patches one object: the process survives, that object
// fails with reason "panic: ...", every other Secret is rewritten (etcd shows exactly that one
// under key1), and a second run without the fault finishes it.
func TestEnginePanicOnOneObjectIsContained(t *testing.T) {
	c, key1 := aescbcCluster(t)
	cs := typed(t, c)
	createSecrets(t, cs, 300, "panic-1", "panic-2")
	rotate(t, c, key1)

	const victim = "secret-00042" // in panic-1 (seed spreads round-robin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := panickyEngine(t, c.RestConfig("admin"), victim).Run(ctx)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("run with a panicking client: %+v, panics %d, failures %+v", s.Total, s.Panics, s.Failures)
	if s.Total.Failed != 1 || s.Total.Rewritten != 299 || !s.Complete || s.Panics != 1 {
		t.Fatalf("summary %+v complete=%v panics=%d: want 299 rewritten, 1 failed, the run complete", s.Total, s.Complete, s.Panics)
	}
	if f := s.Failures; len(f) != 1 || f[0].Namespace != "panic-1" || f[0].Name != victim || !strings.HasPrefix(f[0].Reason, "panic: ") {
		t.Fatalf("failures %+v, want panic-1/%s with reason panic: ...", f, victim)
	}
	r := scan(t, c)
	if r.Stale() != 1 || len(r.Offenders) != 1 || r.Offenders[0] != "panic-1/"+victim {
		t.Fatalf("etcd: %d stale %v, want exactly panic-1/%s still under key1", r.Stale(), r.Offenders, victim)
	}

	s2 := mustRun(t, c.RestConfig("admin"), nil)
	if s2.Total.Rewritten != 1 || !s2.OK() {
		t.Fatalf("second run %+v: want the one object left rewritten", s2.Total)
	}
	if r := scan(t, c); r.Stale() != 0 {
		t.Fatalf("%d Secrets still not under key2: %v", r.Stale(), r.Offenders)
	}
}

// panickyEngine is newEngine over a metadata client that panics when it patches an object named
// victim.
func panickyEngine(t *testing.T, cfg *rest.Config, victim string) *reencrypt.Engine {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	targets, err := cluster.ResolveTargets(disco, []string{"secrets"})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := reencrypt.New(panicOn{Interface: meta, name: victim}, reencrypt.Options{Targets: targets, Strategy: reencrypt.Rewrite, PageSize: 50, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// panicOn is a metadata client whose Patch panics for one object name.
type panicOn struct {
	metadata.Interface
	name string
}

func (p panicOn) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return panicOnGetter{Getter: p.Interface.Resource(gvr), name: p.name}
}

type panicOnGetter struct {
	metadata.Getter
	name string
}

func (g panicOnGetter) Namespace(ns string) metadata.ResourceInterface {
	return panicOnResource{ResourceInterface: g.Getter.Namespace(ns), name: g.name}
}

type panicOnResource struct {
	metadata.ResourceInterface
	name string
}

func (r panicOnResource) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, o metav1.PatchOptions, sub ...string) (*metav1.PartialObjectMetadata, error) {
	if name == r.name {
		var m map[string]bool
		m[name] = true // a real runtime panic: assignment to entry in nil map
	}
	return r.ResourceInterface.Patch(ctx, name, pt, data, o, sub...)
}
