package storagemode

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rekey-dev/rekey/shared/etcdscan/etcdtest"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// startEtcd runs a single-member etcd in-process (shared/etcdscan/etcdtest).
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	return etcdtest.Start(t)
}

func kmsV1Value() []byte {
	dek := []byte("opaque-encrypted-dek")
	v := []byte("k8s:enc:kms:v1:legacy:")
	v = binary.BigEndian.AppendUint16(v, uint16(len(dek)))
	v = append(v, dek...)
	return append(v, []byte("ciphertext")...)
}

func aescbcValue(key string) []byte {
	return append([]byte("k8s:enc:aescbc:v1:"+key+":"), make([]byte, 32)...)
}

// TestSampleEtcd: the newest value names the writer even when most stored values are older and
// written by another provider; keys are paged (more than one page); an empty prefix gives no
// observation; identity values are classified.
func TestSampleEtcd(t *testing.T) {
	c := startEtcd(t)
	ctx := context.Background()
	put := func(k string, v []byte) {
		t.Helper()
		if _, err := c.Put(ctx, k, string(v)); err != nil {
			t.Fatal(err)
		}
	}
	// 1,200 Secrets written by aescbc key1, then a migration to KMS v1 rewrote three of them
	// (in the middle of the key range, so the newest keys are not the last ones).
	for i := range 1200 {
		put(fmt.Sprintf("/registry/secrets/ns/s%04d", i), aescbcValue("key1"))
	}
	for _, n := range []string{"0500", "0007", "0999"} {
		put("/registry/secrets/ns/s"+n, kmsV1Value())
	}
	put("/registry/configmaps/ns/c", []byte("k8s\x00plain"))
	ev, err := SampleEtcd(ctx, c, []Target{
		{Resource: "secrets", Prefix: "/registry/secrets/"},
		{Resource: "configmaps", Prefix: "/registry/configmaps/"},
		{Resource: "widgets.example.com", Prefix: "/registry/example.com/widgets/"},
	}, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Observations) != 2 {
		t.Fatalf("observations %+v", ev.Observations)
	}
	s := ev.Observations[0]
	if s.Resource != "secrets" || s.Provider != storedvalue.KMSv1 || s.KeyName != "legacy" || s.Sampled != 5 ||
		s.ByClass["kms-v1:legacy"] != 3 || s.ByClass["aescbc:key1"] != 2 {
		t.Fatalf("secrets: %+v", s)
	}
	if cm := ev.Observations[1]; cm.Provider != storedvalue.Identity || cm.Sampled != 1 {
		t.Fatalf("configmaps: %+v", cm)
	}
	d, err := Decide(Inputs{Requested: "auto", ServerVersion: "v1.37.2", Etcd: &ev})
	if err != nil || d.Strategy != "annotate" || d.Rule != SourceEtcd {
		t.Fatalf("decision %+v %v", d, err)
	}

	empty, err := SampleEtcd(ctx, c, []Target{{Resource: "secrets", Prefix: "/other/secrets/"}}, 0)
	if err != nil || len(empty.Observations) != 0 || !strings.Contains(empty.Unavailable, "no stored values under /other/secrets/") {
		t.Fatalf("empty prefix: %+v %v", empty, err)
	}
	if _, err := SampleEtcd(ctx, c, []Target{{Resource: "secrets", Prefix: "/registry/secrets"}}, 0); err == nil {
		t.Fatal("prefix without a trailing slash: want an error")
	}
}
