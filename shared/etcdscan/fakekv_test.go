package etcdscan

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fakeKV is an in-memory clientv3.KV with a revision history. Get honours WithRange, WithLimit
// and WithRev (including ErrCompacted and ErrFutureRev) the way etcd's range does; anything else
// Scan has no business using fails the test. It is a stand-in for the paging logic only: the
// embedded-etcd test checks the same behaviour against the real server.
type fakeKV struct {
	clientv3.KV // nil: any method but Get panics

	t       *testing.T
	mu      sync.Mutex
	rev     int64
	compact int64
	history []fakeEvent
	gets    []fakeGet
	// beforeGet runs (unlocked) before the n-th Get (from 1), to change the store mid-scan.
	beforeGet func(n int)
}

type fakeEvent struct {
	rev     int64
	key     string
	value   []byte
	deleted bool
}

// fakeGet records the options of one Get.
type fakeGet struct {
	key, end string
	limit    int64
	rev      int64
}

func newFakeKV(t *testing.T) *fakeKV {
	return &fakeKV{t: t, rev: 1}
}

func (f *fakeKV) put(key string, value []byte) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	f.history = append(f.history, fakeEvent{rev: f.rev, key: key, value: bytes.Clone(value)})
	return f.rev
}

func (f *fakeKV) del(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	f.history = append(f.history, fakeEvent{rev: f.rev, key: key, deleted: true})
}

func (f *fakeKV) compactTo(rev int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compact = rev
}

func (f *fakeKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	f.mu.Lock()
	n := len(f.gets) + 1
	hook := f.beforeGet
	f.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	op := clientv3.OpGet(key, opts...)
	if op.IsKeysOnly() || op.IsCountOnly() || op.IsSortSet() || op.IsSerializable() ||
		op.MinModRev() != 0 || op.MaxModRev() != 0 || op.MinCreateRev() != 0 || op.MaxCreateRev() != 0 {
		f.t.Errorf("Get(%q) with an option the fake does not model", key)
	}
	end := string(op.RangeBytes())

	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, fakeGet{key: key, end: end, limit: op.Limit(), rev: op.Rev()})
	rev := op.Rev()
	switch {
	case rev > f.rev:
		return nil, rpctypes.ErrFutureRev
	case rev > 0 && rev < f.compact:
		return nil, rpctypes.ErrCompacted
	case rev <= 0:
		rev = f.rev
	}

	// The store as of rev.
	state := map[string]*mvccpb.KeyValue{}
	for _, e := range f.history {
		if e.rev > rev {
			break
		}
		if e.deleted {
			delete(state, e.key)
			continue
		}
		kv := state[e.key]
		if kv == nil {
			kv = &mvccpb.KeyValue{Key: []byte(e.key), CreateRevision: e.rev}
			state[e.key] = kv
		}
		kv.Value, kv.ModRevision = e.value, e.rev
		kv.Version++
	}
	var keys []string
	for k := range state {
		inRange := k == key
		if end != "" {
			inRange = k >= key && (end == "\x00" || k < end)
		}
		if inRange {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)

	resp := &clientv3.GetResponse{Header: &etcdserverpb.ResponseHeader{Revision: f.rev}, Count: int64(len(keys))}
	if l := op.Limit(); l > 0 && int64(len(keys)) > l {
		keys, resp.More = keys[:l], true
	}
	for _, k := range keys {
		kv := state[k]
		resp.Kvs = append(resp.Kvs, &mvccpb.KeyValue{
			Key: kv.Key, Value: bytes.Clone(kv.Value), CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version,
		})
	}
	return resp, nil
}

func (f *fakeKV) recordedGets() []fakeGet {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.gets)
}
