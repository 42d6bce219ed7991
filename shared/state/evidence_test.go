package state

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestEvidenceRecordsAreImmutableAndPruned: records are written immutable, listed oldest first,
// written once per ID, and the oldest beyond the bound are deleted.
func TestEvidenceRecordsAreImmutableAndPruned(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	s, _ := newStore(t, cs, "c1")
	for i := range 5 {
		at := t0.Add(time.Duration(i) * time.Minute)
		if err := s.AddEvidence(ctx, fmt.Sprintf("r%d", i), at, []byte(fmt.Sprintf(`{"n":%d}`, i)), 3); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddEvidence(ctx, "r4", t0.Add(4*time.Minute), []byte(`{"n":"changed"}`), 3); err != nil {
		t.Fatalf("the same record again: %v", err)
	}
	recs, err := s.Evidence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].ID != "r2" || recs[2].ID != "r4" || string(recs[2].Body) != `{"n":4}` || !recs[2].EndedAt.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("records %+v: want r2..r4, oldest first, r4 unchanged", recs)
	}
	cm, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, s.EvidenceName("r4"), metav1.GetOptions{})
	if err != nil || cm.Immutable == nil || !*cm.Immutable {
		t.Fatalf("stored %+v %v: want an immutable ConfigMap", cm, err)
	}
}
