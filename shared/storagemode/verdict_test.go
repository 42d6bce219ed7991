package storagemode

import (
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// TestJudge is the suspicious rule: a pass after a known rotation that rewrote nothing is
// suspicious unless etcd or the adoption gate's earlier proof shows the objects are current.
func TestJudge(t *testing.T) {
	rot := &Rotation{KeyID: "key-1", PrimaryVersion: "v2"}
	proved := &Rotation{KeyID: "key-1", PrimaryVersion: "v2", ProvedBefore: true}
	current := reencrypt.Counts{Listed: 10, Current: 10}
	v2 := &Decision{Writers: []Observation{obs("secrets", storedvalue.KMSv2)}}
	v1 := &Decision{Writers: []Observation{obs("secrets", storedvalue.KMSv1)}}
	plain := &Decision{Writers: []Observation{obs("secrets", storedvalue.Identity)}}
	allCurrent := &StoredCheck{Total: 10, Current: 10, ByClass: map[string]int{"kms-v2:p:sha256:x": 10}}
	someStale := &StoredCheck{Total: 10, Current: 7, ByClass: map[string]int{"kms-v2:p:sha256:x": 7, "kms-v2:p:sha256:y": 3}}
	v1Stored := &StoredCheck{Total: 10, ByClass: map[string]int{"kms-v1:p": 10}}
	cases := []struct {
		name       string
		f          PassFacts
		status     Status
		rule       string
		firstCause string
	}{
		{"no key id: no known rotation", PassFacts{Strategy: reencrypt.Rewrite, Total: current}, StatusNotJudged, "no-rotation", ""},
		{"dry run", PassFacts{Strategy: reencrypt.Rewrite, DryRun: true, Total: reencrypt.Counts{Listed: 10}, Rotation: rot}, StatusNotJudged, "dry-run", ""},
		{"rewrote some", PassFacts{Strategy: reencrypt.Rewrite, Total: reencrypt.Counts{Listed: 10, Rewritten: 1, Current: 9}, Rotation: rot}, StatusOK, "rewrote", ""},
		{"nothing listed", PassFacts{Strategy: reencrypt.Rewrite, Rotation: rot}, StatusOK, "nothing-current", ""},
		{"all deleted", PassFacts{Strategy: reencrypt.Rewrite, Total: reencrypt.Counts{Listed: 3, Deleted: 3}, Rotation: rot}, StatusOK, "nothing-current", ""},
		{"zero, no evidence", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: rot}, StatusSuspicious, "zero-after-rotation", "the API servers have not adopted"},
		{"zero, KMS v1 evidence", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: rot, Decision: v1}, StatusSuspicious, "zero-after-rotation", "KMS v1"},
		{"zero, identity evidence", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: rot, Decision: plain}, StatusSuspicious, "zero-after-rotation", "not covered by the encryption config"},
		{"zero, KMS v2 evidence", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: rot, Decision: v2}, StatusSuspicious, "zero-after-rotation", "the API servers have not adopted"},
		{"converged: etcd all under the primary", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: rot, Stored: allCurrent}, StatusOK, "etcd-current", ""},
		{"etcd shows stale values", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: proved, Stored: someStale}, StatusSuspicious, "etcd-stale", "etcd shows 3 of 10 values NOT under key version v2"},
		{"etcd shows KMS v1", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: rot, Stored: v1Stored}, StatusSuspicious, "etcd-stale", "etcd shows 10 of 10"},
		{"converged: proved before this run", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: proved, Decision: v2}, StatusOK, "proved-before", ""},
		{"proof does not hold on KMS v1", PassFacts{Strategy: reencrypt.Rewrite, Total: current, Rotation: proved, Decision: v1}, StatusSuspicious, "zero-after-rotation", "KMS v1"},
		{"annotate that wrote nothing", PassFacts{Strategy: reencrypt.Annotate, Total: current, Rotation: rot, Decision: v1}, StatusSuspicious, "zero-after-rotation", "the API servers have not adopted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := Judge(tc.f)
			if v.Status != tc.status || v.Rule != tc.rule {
				t.Fatalf("got %s/%s (%s), want %s/%s", v.Status, v.Rule, v.Message, tc.status, tc.rule)
			}
			if v.Suspicious() != (tc.status == StatusSuspicious) {
				t.Fatal("Suspicious() disagrees with Status")
			}
			if tc.status != StatusSuspicious {
				if len(v.Causes) != 0 {
					t.Fatalf("causes on a %s verdict: %v", v.Status, v.Causes)
				}
				return
			}
			if !strings.HasPrefix(v.Message, "suspicious: 0 rewritten after a rotation") || !strings.Contains(v.Message, "key-1") || !strings.Contains(v.Message, "v2") {
				t.Errorf("message %q", v.Message)
			}
			if len(v.Causes) == 0 || !strings.Contains(v.Causes[0], tc.firstCause) {
				t.Fatalf("first cause of %v, want %q", v.Causes, tc.firstCause)
			}
			all := strings.Join(v.Causes, "\n")
			if !strings.Contains(all, "rekey verify") {
				t.Errorf("causes do not say how to confirm a previous run: %v", v.Causes)
			}
			if tc.f.Strategy == reencrypt.Rewrite && (tc.f.Decision == nil || tc.f.Decision == v1) && !strings.Contains(all, "--strategy annotate") {
				t.Errorf("causes do not name --strategy annotate: %v", v.Causes)
			}
		})
	}
}
