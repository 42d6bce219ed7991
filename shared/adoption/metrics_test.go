package adoption

import (
	"errors"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/apimetrics"
)

// foreign is a KMS plugin key_id format that is not the version ID (ACK's is not documented).
func foreign(version string) string { return "ackkms-" + strings.ToUpper(version) }

// With a foreign key_id format no series ever equals sha256(primary): adoption is proved by every
// replica's key-ID hash moving away from the hash recorded for the previous version, to one new
// value; the evidence says how it was judged and carries the new hash for the next rotation.
func TestMetricsMovingHashWithAKnownPreviousHash(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, staggered()...)
	f.keyID = foreign
	ev, took, err := wait(t, fc, Gate{Secrets: f, Metrics: f, PreviousKeyIDHash: f.metricsHash("v1")}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Metrics || ev.Replicas != 3 || took < 30*time.Second || ev.KeyIDHash != f.metricsHash("v2") || !ev.Direct {
		t.Fatalf("evidence %+v after %s; want metrics over 3 replicas, not before the last moved (30s), on the new hash", ev, took)
	}
	if !strings.Contains(ev.Detail, "moved their KMS key ID to one new value") || len(ev.Notes) == 0 || !strings.Contains(ev.Notes[0], "not the key version ID") {
		t.Fatalf("detail %q notes %q", ev.Detail, ev.Notes)
	}
}

// Without a recorded previous hash, a replica whose Status reported another key ID after the
// rotation, and now a new one, has moved: the first rotation seen with a foreign format is proved.
func TestMetricsMovingHashAfterTheRotation(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{"v1", "v2", at(5 * time.Second)}, replica{"v1", "v2", at(20 * time.Second)})
	f.keyID = foreign
	ev, _, err := wait(t, fc, Gate{Secrets: f, Metrics: f, RotatedAt: t0}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Metrics || ev.KeyIDHash != f.metricsHash("v2") {
		t.Fatalf("evidence %+v, want metrics on the new hash", ev)
	}
}

// One replica held on the old key ID (its plugin's Status frozen): never adopted; the error names
// that replica and the kind of evidence.
func TestMetricsMovingHashNamesAReplicaThatNeverMoves(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{"v1", "v2", at(0)}, replica{from: "v1"})
	f.keyID = foreign
	_, _, err := wait(t, fc, Gate{Secrets: f, Metrics: f, PreviousKeyIDHash: f.metricsHash("v1"), Timeout: 3 * time.Minute}, "v2")
	var na *NotAdoptedError
	if !errors.As(err, &na) || na.Kind != Metrics {
		t.Fatalf("err = %v, want not adopted on metrics", err)
	}
	frozen, moved := shortHash(apimetrics.HashKeyID("apiserver-1")), shortHash(apimetrics.HashKeyID("apiserver-0"))
	if !strings.Contains(err.Error(), frozen) || !strings.Contains(err.Error(), "have not moved") || strings.Contains(err.Error(), moved) {
		t.Fatalf("error %q: want the frozen replica %s named, and not %s, which moved", err, frozen, moved)
	}
}

// Series that never equal sha256(primary) and never move (no earlier hash known, no rotation time)
// cannot prove anything: after MetricsGiveUp the gate goes on to the next kind and says why.
func TestMetricsThatNeverMatchGiveWay(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{from: "v2"}, replica{from: "v2"})
	f.keyID = foreign
	ev, took, err := wait(t, fc, Gate{Secrets: f, Metrics: f, Mode: Auto, Settle: time.Minute, Timeout: 10 * time.Minute}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind == Metrics || took < time.Minute {
		t.Fatalf("evidence %+v after %s; want another kind after the give-up (the 1m settle)", ev, took)
	}
	found := false
	for _, a := range ev.Tried {
		if a.Kind == Metrics && strings.Contains(a.Reason, "never equal sha256") && strings.Contains(a.Reason, "no hash is recorded") {
			found = true
		}
	}
	if !found {
		t.Fatalf("tried %+v: want metrics given up with the reason", ev.Tried)
	}
}

// A baseline job (no rotation observed) cannot see a move: with a foreign key_id format the series
// give way after a few scrapes instead of the usual wait.
func TestMetricsOnABaselineGiveWayAtOnce(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{from: "v1"}, replica{from: "v1"})
	f.keyID = foreign
	ev, took, err := wait(t, fc, Gate{Secrets: f, Metrics: f, Baseline: true, Settle: time.Second, RotatedAt: t0.Add(-time.Hour)}, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind == Metrics || took >= DefaultMetricsGiveUp {
		t.Fatalf("evidence %+v after %s: want another kind well before %s", ev, took, DefaultMetricsGiveUp)
	}
	if len(ev.Tried) < 2 || !strings.Contains(ev.Tried[1].Reason, "baseline") {
		t.Fatalf("tried %+v: want the metrics reason to name the baseline", ev.Tried)
	}
}

// The gate records the key-ID hash of the version it proved on the ledger; the next rotation's gate
// reads it back as the previous hash, so it proves adoption by the move even when every replica
// had moved before it started (nothing observed, no rotation time) and no caller kept the hash.
func TestTheLedgerCarriesTheKeyIDHashToTheNextRotation(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, staggered()...)
	f.keyID = foreign
	ev, _, err := wait(t, fc, Gate{Secrets: f, Metrics: f, PreviousKeyIDHash: f.metricsHash("v1")}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	ledger := f.objs[LedgerName]
	if ev.KeyIDHash != f.metricsHash("v2") || ledger == nil || ledger.s.Annotations[KeyIDHashAnnotation] != f.metricsHash("v2") ||
		ledger.s.Annotations[ProvedVersionAnnotation] != "v2" {
		t.Fatalf("evidence hash %q, ledger %+v: want v2's hash recorded", ev.KeyIDHash, ledger)
	}

	// Rotation to v3: every replica is already on it when the gate starts.
	f.mu.Lock()
	for i := range f.replicas {
		f.replicas[i] = replica{"v2", "v3", fc.Now().Add(-time.Second)}
	}
	f.mu.Unlock()
	ev, _, err = wait(t, fc, Gate{Secrets: f, Metrics: f, Predecessor: "v2"}, "v3")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Metrics || ev.KeyIDHash != f.metricsHash("v3") || f.objs[LedgerName].s.Annotations[KeyIDHashAnnotation] != f.metricsHash("v3") {
		t.Fatalf("second rotation: evidence %+v, want the metrics' move away from the recorded v2 hash", ev)
	}
}

// Without a recorded previous hash, a replica that moved before the gate started cannot be shown to
// have moved: the series give way after MetricsGiveUp (instead of waiting for ever), even though
// another replica was seen moving.
func TestMetricsGiveWayWhenAMoveHappenedBeforeTheGate(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{"v1", "v2", t0.Add(-time.Minute)}, replica{"v1", "v2", at(10 * time.Second)})
	f.keyID = foreign
	ev, took, err := wait(t, fc, Gate{Secrets: f, Metrics: f, Settle: time.Second}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind == Metrics || took < DefaultMetricsGiveUp {
		t.Fatalf("evidence %+v after %s: want the series given up after %s", ev, took, DefaultMetricsGiveUp)
	}
}
