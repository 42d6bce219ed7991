package controlplane

import (
	"context"
	"testing"
	"time"
)

// startTTimeout bounds StartT's start-up, etcd and API server together.
const startTTimeout = 2 * time.Minute

// StartT starts a cluster for a test or benchmark and registers its Stop with t.Cleanup. It
// fails the test (t.Fatal) when Start fails, for example when a binary is missing; it never
// skips. When the test has failed, the cleanup logs the last lines of etcd's and the API
// server's output first.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTTimeout)
	defer cancel()
	begin := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("control plane ready in %v: %s, etcd %s, dir %s", time.Since(begin).Round(time.Millisecond), c.Server, c.EtcdEndpoint, c.Dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("etcd output (last lines):\n%s", c.etcdLog.tailText(40))
			t.Logf("%s", c.replicaLogTails(40))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return c
}
