package etcdscan

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// Defaults for the zero Options.
const (
	DefaultPageSize = 500
	DefaultMaxNames = 100
)

// Options tune a scan; the zero value is usable.
type Options struct {
	PageSize int // default 500
	MaxNames int // cap on Report.Offenders; default 100; negative keeps no names
}

func (o Options) withDefaults() Options {
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.MaxNames == 0 {
		o.MaxNames = DefaultMaxNames
	}
	return o
}

// Report summarises one scan. It is JSON-serialisable and holds no data.
//
// ByClass is keyed by storedvalue.Value.Class, which holds full KMS v2 key IDs; see
// RedactedByClass before logging it.
type Report struct {
	Prefix   string         `json:"prefix"`
	Revision int64          `json:"revision"` // etcd revision the scan was pinned to
	Total    int            `json:"total"`
	ByClass  map[string]int `json:"byClass"` // Value.Class() -> count
	// ByDEKSource counts KMS v2 values by DEK source type (AES_GCM_KEY or
	// HKDF_SHA256_XNONCE_AES_GCM_SEED); the API server also treats a changed type as stale.
	ByDEKSource map[string]int `json:"byDEKSource,omitempty"`
	Matching    int            `json:"matching"`   // values for which want(v) was true
	Offenders   []string       `json:"offenders"`  // "<namespace>/<name>" (from the key) of non-matching or unreadable values, capped at MaxNames
	Unreadable  int            `json:"unreadable"` // values Classify rejected
}

// Stale returns Total - Matching: the values that are not under the wanted key, unreadable ones
// included.
func (r Report) Stale() int {
	return r.Total - r.Matching
}

// OffendersTruncated reports whether Offenders lists fewer names than there are stale values.
func (r Report) OffendersTruncated() bool {
	return len(r.Offenders) < r.Stale()
}

// RedactedByClass returns ByClass with each KMS v2 key ID replaced by storedvalue.HashKeyID of it,
// for logs.
func (r Report) RedactedByClass() map[string]int {
	out := make(map[string]int, len(r.ByClass))
	for class, n := range r.ByClass {
		out[redactClass(class)] += n
	}
	return out
}

// redactClass turns "kms-v2:NAME:KEYID" into "kms-v2:NAME:sha256:…". KMS v2 provider names cannot
// hold a colon, so the key ID is everything after the second colon.
func redactClass(class string) string {
	rest, ok := strings.CutPrefix(class, string(storedvalue.KMSv2)+":")
	if !ok {
		return class
	}
	name, keyID, ok := strings.Cut(rest, ":")
	if !ok {
		return class
	}
	return storedvalue.Value{Provider: storedvalue.KMSv2, KeyName: name, KeyID: keyID}.RedactedClass()
}

// Scan reads every key under prefix (e.g. "/registry/secrets/") in pages pinned to one revision
// and classifies it. want reports whether a value is under the expected key; nil means all match.
//
// Give prefix with its trailing slash: "/registry/secrets" would also cover "/registry/secretsfoo/".
// Each value counts once in Total and either in ByClass or in Unreadable; want is called only for
// values Classify accepted.
//
// The first page is a linearizable read whose revision pins all later pages, so the report is a
// consistent snapshot of the prefix. If etcd compacts that revision before the last page is read,
// Scan fails with an error wrapping rpctypes.ErrCompacted; run it again. On error Scan also
// returns the partial Report of the pages it read. Scan is safe for concurrent use if kv is.
func Scan(ctx context.Context, kv clientv3.KV, prefix string, want func(storedvalue.Value) bool, opts Options) (Report, error) {
	opts = opts.withDefaults()
	r := Report{Prefix: prefix, ByClass: map[string]int{}, Offenders: []string{}}
	if prefix == "" {
		return r, errors.New("scan etcd: empty prefix")
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for page := 1; ; page++ {
		getOpts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(opts.PageSize))}
		if r.Revision != 0 {
			getOpts = append(getOpts, clientv3.WithRev(r.Revision))
		}
		resp, err := kv.Get(ctx, from, getOpts...)
		if err != nil {
			if r.Revision == 0 {
				return r, fmt.Errorf("scan etcd prefix %q: read first page: %w", prefix, err)
			}
			return r, fmt.Errorf("scan etcd prefix %q: read page %d from key %q at revision %d: %w", prefix, page, from, r.Revision, err)
		}
		if r.Revision == 0 {
			if resp.Header == nil || resp.Header.Revision <= 0 {
				return r, fmt.Errorf("scan etcd prefix %q: first page carries no revision", prefix)
			}
			r.Revision = resp.Header.Revision
		}
		for _, item := range resp.Kvs {
			key := string(item.Key)
			if !strings.HasPrefix(key, prefix) {
				return r, fmt.Errorf("scan etcd prefix %q: etcd returned key %q outside the prefix", prefix, key)
			}
			r.Total++
			v, err := storedvalue.Classify(item.Value)
			ok := err == nil
			if ok {
				r.ByClass[v.Class()]++
				if v.DEKSourceType != "" {
					if r.ByDEKSource == nil {
						r.ByDEKSource = map[string]int{}
					}
					r.ByDEKSource[v.DEKSourceType]++
				}
				ok = want == nil || want(v)
			} else {
				r.Unreadable++
			}
			if ok {
				r.Matching++
			} else if len(r.Offenders) < opts.MaxNames {
				r.Offenders = append(r.Offenders, ObjectName(prefix, key))
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return r, nil
		}
		// The smallest key after the last one read.
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// ObjectName returns the object name a key under prefix stands for: "ns/name" for
// "/registry/secrets/ns/name" under "/registry/secrets/", and "name" for a cluster-scoped key. A
// prefix given without its trailing slash gives the same names.
func ObjectName(prefix, key string) string {
	name := strings.TrimPrefix(key, prefix)
	return strings.TrimPrefix(name, "/")
}
