package verify

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rekey-dev/rekey/shared/etcdscan/etcdtest"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// kmsV1Value is a value a KMS v1 provider wrote: the prefix, a 2-byte DEK length, DEK, data.
func kmsV1Value() []byte {
	b := []byte("k8s:enc:kms:v1:alibaba-kms:")
	b = append(b, 0, 32)
	b = append(b, bytes.Repeat([]byte{0xAA}, 32)...)
	return append(b, bytes.Repeat([]byte{0xDD}, 48)...)
}

func TestRetirementFromStorage(t *testing.T) {
	tests := []struct {
		name      string
		stored    func(v1, v2 string) map[string][]byte
		verdict   RetirementVerdict
		byVersion func(v1 string) map[string]int
		current   int
		text      []string
	}{
		{
			name: "objects under the old version",
			stored: func(v1, v2 string) map[string][]byte {
				return merge(n("/registry/secrets/old", 12, kmsV2Value(v1)), n("/registry/secrets/new", 5, kmsV2Value(v2)))
			},
			verdict: RetireNotSafe, byVersion: func(v1 string) map[string]int { return map[string]int{v1: 12} }, current: 5,
			text: []string{"retirement: NOT SAFE, evidence storage", ": 12 objects still depend on it", "NOT safe to disable the key or schedule its deletion", "12 objects under older key versions"},
		},
		{
			name:    "every object under the primary",
			stored:  func(_, v2 string) map[string][]byte { return n("/registry/secrets/", 7, kmsV2Value(v2)) },
			verdict: RetireSafe, current: 7,
			text: []string{"retirement: SAFE (old versions), evidence storage", "no stored object depends on a key version older than", "still encrypts 7 objects", "do not disable it"},
		},
		{
			name: "KMS v1 values: version unknown",
			stored: func(_, v2 string) map[string][]byte {
				return merge(n("/registry/secrets/a", 3, kmsV2Value(v2)), n("/registry/secrets/b", 2, kmsV1Value()))
			},
			verdict: RetireNotSafe, current: 3,
			text: []string{"NOT SAFE", "2 objects written by KMS v1"},
		},
		{
			name:    "empty scan proves nothing",
			stored:  func(string, string) map[string][]byte { return nil },
			verdict: RetireCannotTell,
			text:    []string{"CANNOT TELL (not safe)", "found no value"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := kmsfake.New()
			f.CreateKey("key-1")
			v1 := "key-1-v1"
			v2 := f.Rotate("key-1")
			c := etcdtest.Start(t)
			put(t, c, tt.stored(v1, v2))
			r, err := Verify(t.Context(), Inputs{Etcd: c.KV, KMS: f, KeyID: "key-1", Resources: []schema.GroupResource{{Resource: "secrets"}}})
			if err != nil {
				t.Fatal(err)
			}
			ret := r.Retirement
			if ret == nil || ret.Verdict != tt.verdict || ret.Safe != (tt.verdict == RetireSafe) || ret.Evidence != RetireEvidenceStorage || ret.Current != tt.current || ret.Primary != v2 {
				t.Fatalf("retirement %+v, want %s from storage with %d current", ret, tt.verdict, tt.current)
			}
			if tt.byVersion != nil {
				want := tt.byVersion(v1)
				if len(ret.ByVersion) != len(want) || ret.ByVersion[v1] != want[v1] {
					t.Fatalf("byVersion %v, want %v", ret.ByVersion, want)
				}
			}
			var b strings.Builder
			if err := r.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.text {
				if !strings.Contains(b.String(), w) {
					t.Errorf("text lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

func TestRetirementJSON(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	v2 := f.Rotate("key-1")
	c := etcdtest.Start(t)
	put(t, c, merge(n("/registry/secrets/old", 12, kmsV2Value("key-1-v1")), n("/registry/secrets/new", 1, kmsV2Value(v2))))
	r, err := Verify(t.Context(), Inputs{Etcd: c.KV, KMS: f, KeyID: "key-1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Retirement struct {
			Safe      bool           `json:"safe"`
			ByVersion map[string]int `json:"byVersion"`
			Reason    string         `json:"reason"`
		} `json:"retirement"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Retirement.Safe || got.Retirement.ByVersion["key-1-v1"] != 12 || !strings.Contains(got.Retirement.Reason, "NOT safe") {
		t.Fatalf("retirement JSON %+v", got.Retirement)
	}
}

func TestRetirementWithoutStorageCannotTell(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	f.Rotate("key-1")
	// The API only: a convergence pass that rewrote 3 of 40.
	conv := &reencrypt.Summary{Strategy: reencrypt.Rewrite, Complete: true, Total: reencrypt.Counts{Listed: 40, Rewritten: 3, Current: 37}}
	r, err := Verify(t.Context(), Inputs{KMS: f, KeyID: "key-1", ConvergencePass: conv})
	if err != nil {
		t.Fatal(err)
	}
	ret := r.Retirement
	if ret == nil || ret.Verdict != RetireCannotTell || ret.Safe || ret.Evidence != RetireEvidenceConvergence || ret.Listed != 40 || ret.Rewritten != 3 || ret.Dependent() != -1 {
		t.Fatalf("retirement %+v, want cannot-tell from convergence", ret)
	}
	for _, w := range []string{"The API does not say which key version", "3 of 40 objects stale", "Do NOT disable the key"} {
		if !strings.Contains(ret.Reason, w) {
			t.Errorf("reason lacks %q: %s", w, ret.Reason)
		}
	}
	r, err = Verify(t.Context(), Inputs{KMS: f, KeyID: "key-1", Layers: []string{LayerKMS}})
	if err != nil {
		t.Fatal(err)
	}
	if ret := r.Retirement; ret == nil || ret.Verdict != RetireCannotTell || ret.Evidence != RetireEvidenceNone || !strings.Contains(ret.Reason, "no storage evidence") {
		t.Fatalf("kms only: retirement %+v", ret)
	}
}
