package verify

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rekey-dev/rekey/shared/etcdscan/etcdtest"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
)

// Stored values as the API server writes them.
var identityValue = []byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret")

func kmsV2Value(keyID string) []byte {
	b := []byte("k8s:enc:kms:v2:alibaba-kms:")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, bytes.Repeat([]byte{0xBB}, 40))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, keyID)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, bytes.Repeat([]byte{0xCC}, 32))
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

func put(t *testing.T, c *clientv3.Client, kv map[string][]byte) {
	t.Helper()
	for k, v := range kv {
		if _, err := c.Put(t.Context(), k, string(v)); err != nil {
			t.Fatal(err)
		}
	}
}

// n returns count keys "<prefix>ns/name-<i>" holding value.
func n(prefix string, count int, value []byte) map[string][]byte {
	out := map[string][]byte{}
	for i := range count {
		out[fmt.Sprintf("%sns/name-%d", prefix, i)] = value
	}
	return out
}

func merge(ms ...map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestStorageLayer(t *testing.T) {
	const primary = "key-1-v1" // the fake's first version
	secrets := []schema.GroupResource{{Resource: "secrets"}}
	tests := []struct {
		name      string
		stored    map[string][]byte
		prefix    string // Inputs.EtcdPrefix
		resources []schema.GroupResource
		withKey   bool
		expect    string // Inputs.ExpectKeyID
		layer     Status
		verdict   Status
		reasons   []string
	}{
		{
			name: "current", stored: n("/registry/secrets/", 5, kmsV2Value(primary)), withKey: true,
			layer: Pass, verdict: Pass, reasons: []string{"5 values under /registry/secrets/", "every value is a KMS v2 EncryptedObject under key version " + primary},
		},
		{
			name: "expected key ID without a KMS key", stored: n("/registry/secrets/", 5, kmsV2Value("kid-9")), expect: "kid-9",
			layer: Pass, verdict: Pass, reasons: []string{"under key version kid-9"},
		},
		{
			name: "stale", stored: merge(n("/registry/secrets/", 3, kmsV2Value(primary)), n("/registry/secrets/x", 2, kmsV2Value("old"))), withKey: true,
			layer: Fail, verdict: Fail, reasons: []string{"2 of 5 values are not under key version " + primary},
		},
		{
			name: "empty etcd", withKey: true,
			layer: Fail, verdict: Fail, reasons: []string{"scanned 0 values under /registry/secrets/", "etcd holds no key at all"},
		},
		{
			name: "wrong prefix", stored: n("/custom/secrets/", 3, kmsV2Value(primary)), withKey: true,
			layer: Fail, verdict: Fail, reasons: []string{"scanned 0 values under /registry/secrets/", "3 keys but none under /registry/", "--etcd-prefix"},
		},
		{
			name: "events etcd", stored: n("/registry/events/", 4, identityValue), withKey: true,
			layer: Fail, verdict: Fail, reasons: []string{"scanned 0 values", "all 4 keys under /registry/ are events", "events etcd"},
		},
		{
			name: "no such objects", stored: n("/registry/configmaps/", 2, identityValue), withKey: true,
			layer: Fail, verdict: Fail, reasons: []string{"scanned 0 values", "2 other keys under /registry/"},
		},
		{
			name: "custom prefix honoured", stored: n("/custom/secrets/", 3, kmsV2Value(primary)), prefix: "/custom", withKey: true,
			layer: Pass, verdict: Pass, reasons: []string{"3 values under /custom/secrets/"},
		},
		{
			name: "identity with a key", stored: merge(n("/registry/secrets/", 3, kmsV2Value(primary)), n("/registry/secrets/p", 2, identityValue)), withKey: true,
			layer: Fail, verdict: Fail, reasons: []string{"2 of 5 values are stored unencrypted (identity)"},
		},
		{
			name: "identity without a key", stored: n("/registry/secrets/", 4, identityValue),
			layer: Fail, verdict: Fail, reasons: []string{"4 of 4 values are stored unencrypted (identity)", "e.g. ns/name-0"},
		},
		{
			name: "no key: classes only are no evidence", stored: n("/registry/secrets/", 4, kmsV2Value("whatever")),
			layer: Warn, verdict: Fail, reasons: []string{"counting classes only"},
		},
		{
			name: "garbage without a key", stored: n("/registry/secrets/", 1, []byte("garbage")),
			layer: Fail, verdict: Fail, reasons: []string{"1 values could not be classified"},
		},
		{
			name: "non-core resource path", stored: merge(n("/registry/secrets/", 1, kmsV2Value(primary)), n("/registry/deployments/", 3, kmsV2Value(primary))), withKey: true,
			resources: []schema.GroupResource{{Resource: "secrets"}, {Group: "apps", Resource: "deployments"}},
			layer:     Pass, verdict: Pass, reasons: []string{"deployments.apps: 3 values under /registry/deployments/"},
		},
		{
			name: "one empty resource fails the layer", stored: n("/registry/secrets/", 1, kmsV2Value(primary)), withKey: true,
			resources: []schema.GroupResource{{Resource: "secrets"}, {Group: "networking.k8s.io", Resource: "ingresses"}},
			layer:     Fail, verdict: Fail, reasons: []string{"ingresses.networking.k8s.io: scanned 0 values under /registry/ingress/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := etcdtest.Start(t)
			put(t, c, tt.stored)
			in := Inputs{Etcd: c.KV, EtcdPrefix: tt.prefix, Resources: tt.resources, ExpectKeyID: tt.expect}
			if tt.resources == nil {
				in.Resources = secrets
			}
			if tt.withKey {
				f := kmsfake.New()
				f.CreateKey("key-1")
				in.KMS, in.KeyID = f, "key-1"
			}
			r, err := Verify(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			l := r.Layer(LayerStorage)
			text := strings.Join(l.Reasons, "\n")
			if l.Status != tt.layer || r.Verdict != tt.verdict {
				t.Fatalf("storage %s verdict %s, want %s and %s:\n%s", l.Status, r.Verdict, tt.layer, tt.verdict, text)
			}
			for _, want := range tt.reasons {
				if !strings.Contains(text, want) {
					t.Errorf("reasons lack %q:\n%s", want, text)
				}
			}
		})
	}
}

func TestStorageScanReportsPrefix(t *testing.T) {
	c := etcdtest.Start(t)
	put(t, c, n("/registry/deployments/", 2, identityValue))
	r, err := Verify(context.Background(), Inputs{Etcd: c.KV, Resources: []schema.GroupResource{{Group: "apps", Resource: "deployments"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Storage) != 1 || r.Storage[0].Prefix != "/registry/deployments/" || r.Storage[0].Total != 2 {
		t.Fatalf("storage reports %+v, want 2 values under /registry/deployments/", r.Storage)
	}
}
