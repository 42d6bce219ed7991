package etcdscan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rekey-dev/rekey/shared/storedvalue"
)

const secrets = "/registry/secrets/"

// Stored values of each kind, as the API server writes them.
var (
	identityValue = []byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret")
	aescbcValue   = append([]byte("k8s:enc:aescbc:v1:key1:"), bytes.Repeat([]byte{0xAA}, 32)...)
	garbageValue  = []byte("not a stored value")
)

func kmsV2Value(keyID string) []byte {
	b := []byte("k8s:enc:kms:v2:ack:")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, bytes.Repeat([]byte{0xBB}, 40))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, keyID)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, bytes.Repeat([]byte{0xCC}, 32))
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

// wantKey returns a want func matching KMS v2 values under keyID.
func wantKey(keyID string) func(storedvalue.Value) bool {
	return func(v storedvalue.Value) bool { return v.Provider == storedvalue.KMSv2 && v.KeyID == keyID }
}

func TestScanPagesPinnedToFirstRevision(t *testing.T) {
	kv := newFakeKV(t)
	// Neighbours just outside the prefix must not be read.
	kv.put("/registry/secrets", identityValue)
	kv.put("/registry/secrets0", identityValue)
	kv.put("/registry/secretsx/ns/a", identityValue)
	kv.put("/registry/configmaps/ns/a", identityValue)
	var names []string
	for i := range 23 {
		name := fmt.Sprintf("ns-%d/s-%02d", i%3, i)
		names = append(names, name)
		v := kmsV2Value("new")
		if i%4 == 0 {
			v = kmsV2Value("old")
		}
		kv.put(secrets+name, v)
	}
	slices.Sort(names)
	pinned := kv.rev

	// After the first page: delete a stale key that page 2 would have read, add a stale key and
	// rewrite a fresh one as stale. None of it may show: the scan is a snapshot at pinned.
	kv.beforeGet = func(n int) {
		if n == 2 {
			kv.del(secrets + "ns-2/s-20")
			kv.put(secrets+"ns-9/late", kmsV2Value("old"))
			kv.put(secrets+"ns-2/s-17", kmsV2Value("old"))
		}
	}

	r, err := Scan(t.Context(), kv, secrets, wantKey("new"), Options{PageSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	want := Report{
		Prefix:    secrets,
		Revision:  pinned,
		Total:     23,
		ByClass:   map[string]int{"kms-v2:ack:new": 17, "kms-v2:ack:old": 6},
		Matching:  17,
		Offenders: []string{"ns-0/s-00", "ns-0/s-12", "ns-1/s-04", "ns-1/s-16", "ns-2/s-08", "ns-2/s-20"},
	}
	checkReport(t, r, want)
	if r.Stale() != 6 || r.OffendersTruncated() {
		t.Errorf("Stale() = %d, OffendersTruncated() = %v, want 6, false", r.Stale(), r.OffendersTruncated())
	}

	gets := kv.recordedGets()
	if len(gets) != 5 {
		t.Fatalf("%d Gets, want 5 pages of at most 5 keys for 23 keys", len(gets))
	}
	end := "/registry/secrets0" // clientv3.GetPrefixRangeEnd(secrets)
	for i, g := range gets {
		wantRev := pinned
		wantFrom := secrets
		if i == 0 {
			wantRev = 0
		} else {
			wantFrom = secrets + names[5*i-1] + "\x00"
		}
		if g != (fakeGet{key: wantFrom, end: end, limit: 5, rev: wantRev}) {
			t.Errorf("Get %d: key %q end %q limit %d rev %d; want key %q end %q limit 5 rev %d",
				i+1, g.key, g.end, g.limit, g.rev, wantFrom, end, wantRev)
		}
	}
}

func checkReport(t *testing.T, got, want Report) {
	t.Helper()
	if got.Prefix != want.Prefix || got.Revision != want.Revision || got.Total != want.Total ||
		got.Matching != want.Matching || got.Unreadable != want.Unreadable ||
		!maps.Equal(got.ByClass, want.ByClass) || !slices.Equal(got.Offenders, want.Offenders) {
		t.Errorf("Report =\n%+v\nwant\n%+v", got, want)
	}
	sum := got.Unreadable
	for _, n := range got.ByClass {
		sum += n
	}
	if sum != got.Total {
		t.Errorf("ByClass counts plus Unreadable = %d, want Total %d", sum, got.Total)
	}
}

func TestScanOffenderCapAndUnreadable(t *testing.T) {
	kv := newFakeKV(t)
	for i := range 10 {
		v := aescbcValue
		switch i % 5 {
		case 0:
			v = garbageValue
		case 1:
			v = kmsV2Value("k2")
		case 2:
			v = append([]byte("k8s:enc:kms:v2:ack:"), 0xff) // truncated EncryptedObject
		}
		kv.put(fmt.Sprintf("%sdefault/s%d", secrets, i), v)
	}
	kv.put(secrets+"default/empty", nil)

	tests := []struct {
		name      string
		maxNames  int
		offenders []string
	}{
		{"default cap keeps all", 0, []string{"default/empty", "default/s0", "default/s2", "default/s3", "default/s4", "default/s5", "default/s7", "default/s8", "default/s9"}},
		{"cap of three", 3, []string{"default/empty", "default/s0", "default/s2"}},
		{"negative keeps none", -1, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Scan(t.Context(), kv, secrets, wantKey("k2"), Options{PageSize: 4, MaxNames: tc.maxNames})
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, r, Report{
				Prefix:     secrets,
				Revision:   kv.rev,
				Total:      11,
				ByClass:    map[string]int{"aescbc:key1": 4, "kms-v2:ack:k2": 2},
				Matching:   2,
				Offenders:  tc.offenders,
				Unreadable: 5,
			})
			if r.Stale() != 9 {
				t.Errorf("Stale() = %d, want 9", r.Stale())
			}
			if got, want := r.OffendersTruncated(), len(tc.offenders) < 9; got != want {
				t.Errorf("OffendersTruncated() = %v, want %v", got, want)
			}
		})
	}
}

func TestScanNilWantMatchesReadableValues(t *testing.T) {
	kv := newFakeKV(t)
	kv.put(secrets+"a/x", identityValue)
	kv.put(secrets+"a/y", aescbcValue)
	kv.put(secrets+"a/z", garbageValue)
	r, err := Scan(t.Context(), kv, secrets, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, r, Report{
		Prefix: secrets, Revision: kv.rev, Total: 3, Matching: 2, Unreadable: 1,
		ByClass: map[string]int{"identity": 1, "aescbc:key1": 1}, Offenders: []string{"a/z"},
	})
	if gets := kv.recordedGets(); len(gets) != 1 || gets[0].limit != DefaultPageSize {
		t.Errorf("Gets = %+v, want one page with limit %d", gets, DefaultPageSize)
	}
}

func TestScanDefaultPageSize(t *testing.T) {
	kv := newFakeKV(t)
	for i := range 2*DefaultPageSize + 1 {
		kv.put(fmt.Sprintf("%sns/s%04d", secrets, i), identityValue)
	}
	r, err := Scan(t.Context(), kv, secrets, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 2*DefaultPageSize+1 || r.Matching != r.Total {
		t.Errorf("Total, Matching = %d, %d; want %d", r.Total, r.Matching, 2*DefaultPageSize+1)
	}
	if n := len(kv.recordedGets()); n != 3 {
		t.Errorf("%d pages, want 3", n)
	}
}

func TestScanExactlyFullPages(t *testing.T) {
	kv := newFakeKV(t)
	for i := range 6 {
		kv.put(fmt.Sprintf("%sns/s%d", secrets, i), identityValue)
	}
	r, err := Scan(t.Context(), kv, secrets, nil, Options{PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 6 {
		t.Errorf("Total = %d, want 6", r.Total)
	}
	// etcd reports More=false on the second page, so no third Get is needed.
	if n := len(kv.recordedGets()); n != 2 {
		t.Errorf("%d pages, want 2", n)
	}
}

func TestScanEmptyPrefixRange(t *testing.T) {
	kv := newFakeKV(t)
	kv.put("/registry/configmaps/ns/a", identityValue)
	r, err := Scan(t.Context(), kv, secrets, wantKey("k"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, r, Report{Prefix: secrets, Revision: kv.rev, ByClass: map[string]int{}, Offenders: []string{}})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"prefix":"/registry/secrets/","revision":%d,"total":0,"byClass":{},"matching":0,"offenders":[],"unreadable":0}`, kv.rev)
	if string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
}

func TestScanErrors(t *testing.T) {
	t.Run("empty prefix", func(t *testing.T) {
		if _, err := Scan(t.Context(), newFakeKV(t), "", nil, Options{}); err == nil {
			t.Error("Scan with an empty prefix succeeded")
		}
	})
	t.Run("compacted mid-scan", func(t *testing.T) {
		kv := newFakeKV(t)
		for i := range 5 {
			kv.put(fmt.Sprintf("%sns/s%d", secrets, i), identityValue)
		}
		kv.beforeGet = func(n int) {
			if n == 2 {
				kv.put(secrets+"ns/new", identityValue)
				kv.compactTo(kv.rev)
			}
		}
		r, err := Scan(t.Context(), kv, secrets, nil, Options{PageSize: 2})
		if !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatalf("Scan error = %v, want one wrapping ErrCompacted", err)
		}
		for _, s := range []string{`"/registry/secrets/"`, "page 2", `"/registry/secrets/ns/s1\x00"`} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not name %s", err, s)
			}
		}
		if r.Total != 2 {
			t.Errorf("partial report Total = %d, want the 2 values of page 1", r.Total)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		kv := newFakeKV(t)
		kv.put(secrets+"ns/a", identityValue)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := Scan(ctx, kv, secrets, nil, Options{}); !errors.Is(err, context.Canceled) {
			t.Errorf("Scan error = %v, want one wrapping context.Canceled", err)
		}
	})
	t.Run("error names no value bytes", func(t *testing.T) {
		kv := newFakeKV(t)
		kv.put(secrets+"ns/a", []byte("k8s:enc:aescbc:v1:k:SECRET"))
		r, err := Scan(t.Context(), kv, secrets, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r)
		if bytes.Contains(b, []byte("SECRET")) {
			t.Errorf("report %s holds value bytes", b)
		}
	})
}

func TestObjectName(t *testing.T) {
	tests := []struct{ prefix, key, want string }{
		{"/registry/secrets/", "/registry/secrets/default/db-pass", "default/db-pass"},
		{"/registry/secrets", "/registry/secrets/default/db-pass", "default/db-pass"},
		{"/registry/clusterroles/", "/registry/clusterroles/admin", "admin"},
		{"/registry/clusterroles/", "/registry/clusterroles/system:aggregate-to-edit", "system:aggregate-to-edit"},
		{"/registry/secrets/", "/registry/secrets/kube-system/bootstrap-token-abc.def", "kube-system/bootstrap-token-abc.def"},
		{"/registry/apiextensions.k8s.io/customresourcedefinitions/", "/registry/apiextensions.k8s.io/customresourcedefinitions/foos.example.com", "foos.example.com"},
		{"/registry/secrets/default/", "/registry/secrets/default/db-pass", "db-pass"},
	}
	for _, tc := range tests {
		if got := ObjectName(tc.prefix, tc.key); got != tc.want {
			t.Errorf("ObjectName(%q, %q) = %q, want %q", tc.prefix, tc.key, got, tc.want)
		}
	}
}

func TestScanPrefixWithoutSlash(t *testing.T) {
	kv := newFakeKV(t)
	kv.put("/registry/clusterroles/admin", identityValue)
	kv.put("/registry/clusterroles/edit", garbageValue)
	r, err := Scan(t.Context(), kv, "/registry/clusterroles", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Offenders, []string{"edit"}) {
		t.Errorf("Offenders = %q, want [edit]", r.Offenders)
	}
}

func TestRedactedByClass(t *testing.T) {
	r := Report{ByClass: map[string]int{
		"identity":                    3,
		"aescbc:key1":                 2,
		"kms-v1:legacy":               1,
		"kms-v2:ack:key-1":            4,
		"kms-v2:ack:arn:aws:kms:key2": 5,
	}}
	want := map[string]int{
		"identity":      3,
		"aescbc:key1":   2,
		"kms-v1:legacy": 1,
		"kms-v2:ack:" + storedvalue.HashKeyID("key-1"):            4,
		"kms-v2:ack:" + storedvalue.HashKeyID("arn:aws:kms:key2"): 5,
	}
	if got := r.RedactedByClass(); !maps.Equal(got, want) {
		t.Errorf("RedactedByClass() = %v, want %v", got, want)
	}
}
