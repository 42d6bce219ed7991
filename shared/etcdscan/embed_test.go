package etcdscan

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rekey-dev/rekey/shared/etcdscan/etcdtest"
)

// startEtcd runs a single-member etcd in-process; see etcdtest.Start.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	return etcdtest.Start(t)
}

// hookKV runs before(n) ahead of the n-th Get (from 1) on a real etcd client.
type hookKV struct {
	clientv3.KV
	n      atomic.Int32
	before func(n int)
}

func (h *hookKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	h.before(int(h.n.Add(1)))
	return h.KV.Get(ctx, key, opts...)
}

func TestScanEmbeddedEtcd(t *testing.T) {
	c := startEtcd(t)
	ctx := t.Context()
	put := func(key string, value []byte) {
		t.Helper()
		if _, err := c.Put(ctx, key, string(value)); err != nil {
			t.Fatal(err)
		}
	}

	// 250 Secrets: 200 under the current key ID, 20 under the old one, 20 aescbc, 10 garbage;
	// plus neighbours outside the prefix.
	var wantOffenders []string
	for i := range 250 {
		name := fmt.Sprintf("ns-%d/secret-%03d", i%7, i)
		var v []byte
		switch {
		case i%25 == 3:
			v = garbageValue
		case i%25 == 7 || i%25 == 9:
			v = kmsV2Value("old")
		case i%25 == 11 || i%25 == 13:
			v = aescbcValue
		default:
			v = kmsV2Value("new")
		}
		if i%25 == 3 || i%25 == 7 || i%25 == 9 || i%25 == 11 || i%25 == 13 {
			wantOffenders = append(wantOffenders, name)
		}
		put(secrets+name, v)
	}
	slices.Sort(wantOffenders)
	put("/registry/secrets0", garbageValue)
	put("/registry/secretsx/ns/a", garbageValue)
	put("/registry/configmaps/ns-0/cm", garbageValue)

	head, err := c.Get(ctx, "health-check-key")
	if err != nil {
		t.Fatal(err)
	}
	pinned := head.Header.Revision

	var deleted bool
	kv := &hookKV{KV: c.KV, before: func(n int) {
		// Change the prefix while the scan is on page 2: the report must not see it.
		if n == 2 && !deleted {
			deleted = true
			put(secrets+"ns-9/late", kmsV2Value("old"))
			if _, err := c.Delete(ctx, secrets+"ns-3/secret-003"); err != nil { // garbage
				t.Error(err)
			}
			put(secrets+"ns-0/secret-000", kmsV2Value("old"))
		}
	}}
	r, err := Scan(ctx, kv, secrets, wantKey("new"), Options{PageSize: 40, MaxNames: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := Report{
		Prefix:     secrets,
		Revision:   pinned,
		Total:      250,
		ByClass:    map[string]int{"kms-v2:ack:new": 200, "kms-v2:ack:old": 20, "aescbc:key1": 20},
		Matching:   200,
		Offenders:  wantOffenders,
		Unreadable: 10,
	}
	checkReport(t, r, want)
	if kv.n.Load() != 7 {
		t.Errorf("%d pages, want 7 pages of 40 for 250 keys", kv.n.Load())
	}

	// A second scan sees the changes.
	r, err = Scan(ctx, c, secrets, wantKey("new"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 250 || r.Matching != 199 || r.Unreadable != 9 || r.Revision != pinned+3 {
		t.Errorf("second scan: Total %d Matching %d Unreadable %d Revision %d, want 250, 199, 9, %d", r.Total, r.Matching, r.Unreadable, r.Revision, pinned+3)
	}
	if !maps.Equal(r.ByClass, map[string]int{"kms-v2:ack:new": 199, "kms-v2:ack:old": 22, "aescbc:key1": 20}) {
		t.Errorf("second scan ByClass = %v", r.ByClass)
	}

	// Compaction of the pinned revision mid-scan fails the scan with ErrCompacted.
	var compacted bool
	kv = &hookKV{KV: c.KV, before: func(n int) {
		if n == 2 && !compacted {
			compacted = true
			put(secrets+"ns-9/later", kmsV2Value("new"))
			resp, err := c.Get(ctx, "health-check-key")
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := c.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
				t.Error(err)
			}
		}
	}}
	_, err = Scan(ctx, kv, secrets, nil, Options{PageSize: 100})
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("Scan across a compaction: error %v, want one wrapping ErrCompacted", err)
	}
}
