package etcdtest

import (
	"context"
	"testing"
	"time"
)

// TestStartServesReadsAndWrites checks the helper gives a working member: a value written is read
// back at a newer revision.
func TestStartServesReadsAndWrites(t *testing.T) {
	c := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	put, err := c.Put(ctx, "/registry/secrets/default/a", "v")
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	got, err := c.Get(ctx, "/registry/secrets/default/a")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v" || got.Header.Revision < put.Header.Revision {
		t.Fatalf("read back %+v at revision %d after a put at %d", got.Kvs, got.Header.Revision, put.Header.Revision)
	}
}
