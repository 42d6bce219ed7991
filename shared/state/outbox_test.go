package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

// TestOutboxClaimReleaseAndDedupe: the first sender claims and writes the entry; a concurrent one
// is refused while the claim lives; a transient failure frees it for the next sender; delivery is
// recorded once and later claims see it done. A claim left by a crashed sender expires.
func TestOutboxClaimReleaseAndDedupe(t *testing.T) {
	ctx := context.Background()
	s, clk := newStore(t, rvClient(t), "c1")
	ev := events.DedupKey{Source: "acs.kms", ID: "ev-1"}
	n := policy.Notice{Severity: policy.Critical, Title: "DisableKey"}

	a, err := s.Claim(ctx, ev, n, "inv-a")
	if err != nil || !a.Claimed || !a.Created {
		t.Fatalf("first claim %+v %v", a, err)
	}
	b, err := s.Claim(ctx, ev, n, "inv-b")
	if err != nil || b.Claimed || b.Created {
		t.Fatalf("second claim while the first lives %+v %v", b, err)
	}
	if err := s.Release(ctx, ev, n, "inv-a", errors.New("webhook 503"), false); err != nil {
		t.Fatal(err)
	}
	b, err = s.Claim(ctx, ev, n, "inv-b")
	if err != nil || !b.Claimed || b.Entry.Attempts != 1 || b.Entry.LastError != "webhook 503" {
		t.Fatalf("claim after a failed attempt %+v %v", b, err)
	}
	// inv-b crashes: its claim expires, and the timer's sweep takes the entry.
	clk.Step(ClaimTTL)
	c, err := s.Claim(ctx, ev, n, "timer")
	if err != nil || !c.Claimed {
		t.Fatalf("claim after the TTL %+v %v", c, err)
	}
	if err := s.Release(ctx, ev, n, "timer", nil, false); err != nil {
		t.Fatal(err)
	}
	d, err := s.Claim(ctx, ev, n, "late-redelivery")
	if err != nil || d.Claimed || d.Entry.Delivered.IsZero() || !d.Entry.Done() {
		t.Fatalf("claim after delivery %+v %v: want done, not claimed", d, err)
	}
	// A release by a sender that no longer holds the claim changes nothing.
	if err := s.Release(ctx, ev, n, "inv-b", errors.New("late failure"), true); err != nil {
		t.Fatal(err)
	}
	box, err := s.Outbox(ctx)
	if err != nil || len(box) != 1 || box[0].LastError != "" || !box[0].GaveUp.IsZero() || box[0].Attempts != 2 {
		t.Fatalf("outbox %+v %v", box, err)
	}
}

// TestReleaseWritesAMissingCopy: a cluster whose outbox the sender could not write before still
// learns that the notice was delivered.
func TestReleaseWritesAMissingCopy(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, rvClient(t), "c2")
	ev := events.DedupKey{Source: "acs.kms", ID: "ev-2"}
	if err := s.Release(ctx, ev, policy.Notice{Title: "x"}, "inv", nil, false); err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(ctx, ev, policy.Notice{Title: "x"}, "other")
	if err != nil || c.Claimed || c.Entry.Delivered.IsZero() {
		t.Fatalf("claim %+v %v: want the delivered copy", c, err)
	}
}

// TestSeeKeyKeepsSinceAndNotified: the first state of a key is recorded; the same state keeps its
// start and notice time; a new state starts afresh.
func TestSeeKeyKeepsSinceAndNotified(t *testing.T) {
	ctx := context.Background()
	s, clk := newStore(t, rvClient(t), "c1")
	t1 := clk.Now()
	if _, found, err := s.SeeKey(ctx, KeySeen{Key: "k", KeyID: "k", State: "Disabled", Since: t1, Notified: t1}); err != nil || found {
		t.Fatalf("first: found %v %v", found, err)
	}
	prev, found, err := s.SeeKey(ctx, KeySeen{Key: "k", KeyID: "k", State: "Disabled", Since: t1.Add(time.Hour)})
	if err != nil || !found || prev.State != "Disabled" || !prev.Since.Equal(t1) {
		t.Fatalf("second: %+v %v %v", prev, found, err)
	}
	prev, _, err = s.SeeKey(ctx, KeySeen{Key: "k", KeyID: "k", State: "Enabled", Since: t1.Add(2 * time.Hour)})
	if err != nil || !prev.Since.Equal(t1) || !prev.Notified.Equal(t1) {
		t.Fatalf("third: previous %+v %v: want the Disabled record with its first time and notice", prev, err)
	}
	// A record that does not know the key ID (an event's notice) keeps the one the key check
	// resolved: the alias-moved check compares with it.
	if _, _, err := s.SeeKey(ctx, KeySeen{Key: "k", State: "Enabled", Since: t1.Add(3 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if ks, err := s.Keys(ctx); err != nil || len(ks) != 1 || ks[0].KeyID != "k" {
		t.Fatalf("after a record without the key ID: %+v %v, want KeyID k kept", ks, err)
	}
}
