package e2e

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/seed"
	"github.com/rekey-dev/rekey/shared/cluster"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// aescbcCluster starts a control plane that encrypts Secrets with aescbc key1.
func aescbcCluster(t *testing.T, users ...controlplane.User) (*controlplane.Cluster, controlplane.Key) {
	t.Helper()
	key1 := controlplane.NewKey("key1")
	c := controlplane.StartT(t, controlplane.Options{
		Encryption: &controlplane.Encryption{Providers: []controlplane.Provider{controlplane.AESCBC(key1), controlplane.Identity()}},
		Users:      users,
	})
	return c, key1
}

// rotate makes key2 the write key (key1 still reads) and waits until the API server writes with it.
func rotate(t *testing.T, c *controlplane.Cluster, key1 controlplane.Key) {
	t.Helper()
	key2 := controlplane.NewKey("key2")
	if err := c.SetEncryption(controlplane.Encryption{Providers: []controlplane.Provider{controlplane.AESCBC(key2, key1), controlplane.Identity()}}); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.WaitEncryptionReload(ctx, func(raw []byte) bool { return isKey2(raw) }); err != nil {
		t.Fatalf("wait for key2: %v", err)
	}
}

func isKey2(raw []byte) bool {
	v, err := storedvalue.Classify(raw)
	return err == nil && underKey2(v)
}

func underKey2(v storedvalue.Value) bool {
	return v.Provider == storedvalue.AESCBC && v.KeyName == "key2"
}

// scan classifies every stored Secret against key2.
func scan(t *testing.T, c *controlplane.Cluster) etcdscan.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := etcdscan.Scan(ctx, c.Etcd, "/registry/secrets/", underKey2, etcdscan.Options{})
	if err != nil {
		t.Fatalf("scan etcd: %v", err)
	}
	return r
}

func typed(t *testing.T, c *controlplane.Cluster) *kubernetes.Clientset {
	t.Helper()
	cfg := c.RestConfig("admin")
	cfg.QPS, cfg.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	return cs
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// createSecrets creates n Secrets spread over the namespaces and returns "ns/name" -> data.
func createSecrets(t *testing.T, cs kubernetes.Interface, n int, namespaces ...string) map[string][]byte {
	t.Helper()
	data, err := seed.Secrets(context.Background(), cs, seed.Options{Count: n, Namespaces: namespaces})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// newEngine wires the engine as the CLI does: discovery resolves "secrets", the metadata client
// carries the patches. mutate adjusts the options (nil: rewrite, page size 250).
func newEngine(t *testing.T, cfg *rest.Config, mutate func(*reencrypt.Options)) *reencrypt.Engine {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	targets, err := cluster.ResolveTargets(disco, []string{"secrets"})
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("metadata client: %v", err)
	}
	opts := reencrypt.Options{Targets: targets, Strategy: reencrypt.Rewrite, PageSize: 250}
	if mutate != nil {
		mutate(&opts)
	}
	e, err := reencrypt.New(meta, opts)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	return e
}

// engineRun runs a new engine once.
func engineRun(t *testing.T, cfg *rest.Config, mutate func(*reencrypt.Options)) (reencrypt.Summary, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return newEngine(t, cfg, mutate).Run(ctx)
}

func mustRun(t *testing.T, cfg *rest.Config, mutate func(*reencrypt.Options)) reencrypt.Summary {
	t.Helper()
	s, err := engineRun(t, cfg, mutate)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("run: %+v in %.2fs (%.0f obj/s), retries %d, conflicts %d", s.Total, s.DurationSeconds, s.ObjectsPerSecond, s.Retries, s.Conflicts)
	return s
}

// convergenceEngine is a rewrite engine for the verifier's convergence layer.
func convergenceEngine(t *testing.T, c *controlplane.Cluster) *reencrypt.Engine {
	t.Helper()
	return newEngine(t, c.RestConfig("admin"), nil)
}
