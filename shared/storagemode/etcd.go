package storagemode

import (
	"context"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// DefaultSample is how many of the newest values per resource SampleEtcd classifies.
const DefaultSample = 8

// keysPage is the page size of SampleEtcd's keys-only listing.
const keysPage = 1000

// Target is one resource to sample: its name in reports ("secrets", "deployments.apps") and its
// etcd key prefix with the trailing slash ("/registry/secrets/", see etcdscan.ResourcePrefix).
type Target struct {
	Resource string
	Prefix   string
}

// SampleEtcd finds, for each target, the n (default DefaultSample) values written last (highest
// mod revision) and classifies them; the newest one names the provider that writes the resource
// now. It lists keys only (no values cross the network but the n sampled ones), in pages pinned to
// one revision. A target with no values gives no observation; when none has any, Unavailable says
// so. Errors (etcd unreachable, compaction during the listing) are returned with the evidence read
// so far.
func SampleEtcd(ctx context.Context, kv clientv3.KV, targets []Target, n int) (Evidence, error) {
	if n <= 0 {
		n = DefaultSample
	}
	ev := Evidence{Source: SourceEtcd}
	var empty []string
	for _, t := range targets {
		o, ok, err := sampleOne(ctx, kv, t, n)
		if err != nil {
			ev.Unavailable = err.Error()
			ev.Observations = nil
			return ev, err
		}
		if !ok {
			empty = append(empty, t.Prefix)
			continue
		}
		ev.Observations = append(ev.Observations, o)
	}
	if len(ev.Observations) == 0 {
		ev.Unavailable = "no stored values under " + strings.Join(empty, ", ")
	}
	return ev, nil
}

type keyRev struct {
	key string
	rev int64
}

func sampleOne(ctx context.Context, kv clientv3.KV, t Target, n int) (Observation, bool, error) {
	if !strings.HasSuffix(t.Prefix, "/") {
		return Observation{}, false, fmt.Errorf("sample etcd: prefix %q must end with /", t.Prefix)
	}
	newest, rev, err := newestKeys(ctx, kv, t.Prefix, n)
	if err != nil {
		return Observation{}, false, err
	}
	if len(newest) == 0 {
		return Observation{}, false, nil
	}
	o := Observation{Resource: t.Resource, ByClass: map[string]int{}}
	first := true
	for _, k := range newest { // newest first
		resp, err := kv.Get(ctx, k.key)
		if err != nil {
			return Observation{}, false, fmt.Errorf("sample etcd: read %s value: %w", t.Resource, err)
		}
		if len(resp.Kvs) == 0 {
			continue // deleted since the listing
		}
		o.Sampled++
		v, err := storedvalue.Classify(resp.Kvs[0].Value)
		if err != nil {
			o.ByClass["unreadable"]++
			continue
		}
		o.ByClass[v.RedactedClass()]++
		if first {
			o.Provider, o.KeyName, first = v.Provider, v.KeyName, false
		}
	}
	if first {
		return Observation{}, false, nil // every sampled value vanished or was unreadable
	}
	o.Detail = fmt.Sprintf("newest of %d sampled values under %s at etcd revision %d: %s", o.Sampled, t.Prefix, rev, classList(o.ByClass))
	return o, true, nil
}

// newestKeys lists the keys under prefix (keys only, pinned to the first page's revision) and
// keeps the n with the highest mod revision, newest first.
func newestKeys(ctx context.Context, kv clientv3.KV, prefix string, n int) ([]keyRev, int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	var rev int64
	var top []keyRev
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(keysPage), clientv3.WithKeysOnly()}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := kv.Get(ctx, from, opts...)
		if err != nil {
			return nil, rev, fmt.Errorf("sample etcd: list keys under %s: %w", prefix, err)
		}
		if rev == 0 && resp.Header != nil {
			rev = resp.Header.Revision
		}
		for _, item := range resp.Kvs {
			top = append(top, keyRev{string(item.Key), item.ModRevision})
		}
		sort.Slice(top, func(i, j int) bool { return top[i].rev > top[j].rev })
		if len(top) > n {
			top = top[:n]
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return top, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func classList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
