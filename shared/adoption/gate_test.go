package adoption

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/apimetrics"
)

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// three replicas that adopt v2 at 0 s, 10 s and 30 s after the rotation.
func staggered() []replica {
	return []replica{{"v1", "v2", at(0)}, {"v1", "v2", at(10 * time.Second)}, {"v1", "v2", at(30 * time.Second)}}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": Auto, "AUTO": Auto, "etcd": Etcd, " metrics": Metrics, "canary": Canary, "settle": Settle, "off": Off} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseKind("sleep"); err == nil {
		t.Error("ParseKind(sleep) must fail")
	}
}

// The etcd canary passes only once every replica writes under the primary, then records the
// effect canaries.
func TestEtcdWaitsForEveryReplica(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, staggered()...)
	ev, took, err := wait(t, fc, Gate{Secrets: f, Etcd: f, Metrics: f}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Etcd || ev.Confirmations != DefaultConfirmations || ev.Version != "v2" {
		t.Fatalf("evidence %+v", ev)
	}
	if took < 30*time.Second {
		t.Fatalf("passed after %s, before the last replica adopted v2 (30s)", took)
	}
	if ev.Recorded != DefaultCanaries || f.stored(canaryName(0)) != "v2" || f.objs[LedgerName] == nil {
		t.Fatalf("recorded %d canaries (stored under %s), ledger %v", ev.Recorded, f.stored(canaryName(0)), f.objs[LedgerName] != nil)
	}
	if s := ev.String(); !strings.Contains(s, "evidence: etcd") {
		t.Fatalf("String() = %q", s)
	}
}

func TestTimeoutNamesVersionAndEvidence(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{"v1", "v2", at(0)}, replica{from: "v1"}) // the second never adopts
	_, took, err := wait(t, fc, Gate{Secrets: f, Etcd: f, Timeout: 2 * time.Minute}, "v2")
	var na *NotAdoptedError
	if !errors.As(err, &na) {
		t.Fatalf("err = %v, want *NotAdoptedError", err)
	}
	if na.Version != "v2" || na.Kind != Etcd || took < 2*time.Minute || took > 2*time.Minute+time.Second {
		t.Fatalf("error %+v after %s", na, took)
	}
	msg := err.Error()
	for _, want := range []string{"key version v2", "evidence: etcd", "within 2m0s", "not under key version v2"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
}

// Metrics: every replica seen must report the primary; scrapes round-robin over three replicas.
func TestMetricsSeveralReplicas(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, staggered()...)
	ev, took, err := wait(t, fc, Gate{Secrets: f, Metrics: f}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Metrics || ev.Replicas != 3 || took < 30*time.Second {
		t.Fatalf("evidence %+v after %s; want metrics, 3 replicas, not before 30s", ev, took)
	}
	if len(ev.Tried) != 1 || ev.Tried[0].Kind != Etcd {
		t.Fatalf("tried %+v, want etcd unavailable", ev.Tried)
	}
}

// A replica that learnt the new key ID but still writes with the old one is not adopted.
func TestMetricsStaleWrite(t *testing.T) {
	v1, v2 := apimetrics.HashKeyID("v1"), apimetrics.HashKeyID("v2")
	got := adoptedReplicas([]apimetrics.Replica{
		{APIServerIDHash: "a", Provider: "alibaba-kms", KeyIDHash: v2},
		{APIServerIDHash: "b", Provider: "alibaba-kms", KeyIDHash: v2, StaleWriteHash: v1},
		{APIServerIDHash: "c", Provider: "alibaba-kms", KeyIDHash: v1},
		{APIServerIDHash: "a", Provider: "other-kms", KeyIDHash: apimetrics.HashKeyID("other")},
	}, v2)
	if want := map[string]bool{"a": true, "b": false, "c": false}; len(got) != 3 || got["a"] != want["a"] || got["b"] || got["c"] {
		t.Fatalf("adopted %v, want %v", got, want)
	}
}

// primeCanaries records the effect canaries under v1 (settle after an old rotation: at once).
func primeCanaries(t *testing.T, fc *testingclock.FakeClock, f *fakeCluster) {
	t.Helper()
	ev, _, err := wait(t, fc, Gate{Secrets: f, Metrics: forbiddenScraper{}, RotatedAt: fc.Now().Add(-time.Hour)}, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Settle || ev.Recorded != DefaultCanaries || ev.Direct {
		t.Fatalf("first run: %+v, want settle (not direct) with canaries recorded", ev)
	}
	reasons := ""
	for _, a := range ev.Tried {
		reasons += string(a.Kind) + ": " + a.Reason + "\n"
	}
	if !strings.Contains(reasons, "canary: no canary can prove the rotation: none exists yet") || !strings.Contains(reasons, "metrics: ") {
		t.Fatalf("fresh cluster: tried\n%s", reasons)
	}
}

// Flip-flop: two replicas on different versions rewrite the canaries back and forth; the gate
// passes only when every patch changes nothing, after the lagging replica adopted v2.
func TestCanaryFlipFlop(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{from: "v1"}, replica{from: "v1"})
	primeCanaries(t, fc, f)

	now := fc.Now()
	f.replicas = []replica{{"v1", "v2", now}, {"v1", "v2", now.Add(40 * time.Second)}}
	ev, took, err := wait(t, fc, Gate{Secrets: f, Predecessor: "v1"}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Canary || took < 40*time.Second || ev.Changes < 3 || !ev.Direct {
		t.Fatalf("evidence %+v after %s; want canary, not before 40s, with flip-flops (>= 3 changes)", ev, took)
	}
	for i := range DefaultCanaries {
		if got := f.stored(canaryName(i)); got != "v2" {
			t.Fatalf("canary %d stored under %s after the gate", i, got)
		}
	}

	// A re-run after the completed rotation passes at once: the canaries are recorded under v2.
	ev, took, err = wait(t, fc, Gate{Secrets: f, Predecessor: "v1"}, "v2")
	if err != nil || ev.Kind != Canary || ev.Changes != 0 || took > 2*time.Second || !ev.Direct {
		t.Fatalf("re-run: %+v after %s, %v; want canary at once", ev, took, err)
	}
}

// The gate must not take a canary's history for granted.
func TestCanaryUnusable(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{from: "v1"})
	// Fresh cluster, canary evidence demanded: unavailable, with the reason.
	_, _, err := wait(t, fc, Gate{Mode: Canary, Secrets: f}, "v1")
	if err == nil || !strings.Contains(err.Error(), "none exists yet") {
		t.Fatalf("fresh canaries: %v", err)
	}
	primeCanaries(t, fc, f)
	f.replicas = []replica{{"v2", "v3", fc.Now()}}

	// Recorded under v1, but v3's predecessor is v2: two rotations since, cannot prove.
	_, _, err = wait(t, fc, Gate{Mode: Canary, Secrets: f, Predecessor: "v2"}, "v3")
	if err == nil || !strings.Contains(err.Error(), "not the primary's predecessor v2") {
		t.Fatalf("two rotations: %v", err)
	}
	// Predecessor unknown: cannot prove either.
	_, _, err = wait(t, fc, Gate{Mode: Canary, Secrets: f}, "v3")
	if err == nil || !strings.Contains(err.Error(), "predecessor is unknown") {
		t.Fatalf("unknown predecessor: %v", err)
	}
	// A run without the gate rewrote every canary: none may be used.
	for i := range DefaultCanaries {
		f.rewrite(t, canaryName(i))
	}
	_, _, err = wait(t, fc, Gate{Mode: Canary, Secrets: f, Predecessor: "v1"}, "v3")
	if err == nil || !strings.Contains(err.Error(), "written since its version was recorded") {
		t.Fatalf("rewritten canaries: %v", err)
	}
}

// Every replica still on the predecessor: the canaries never change and the gate times out.
func TestCanaryAllLaggingTimesOut(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{from: "v1"}, replica{from: "v1"})
	primeCanaries(t, fc, f)
	_, took, err := wait(t, fc, Gate{Secrets: f, Predecessor: "v1", Timeout: 3 * time.Minute}, "v2")
	var na *NotAdoptedError
	if !errors.As(err, &na) || na.Kind != Canary || !strings.Contains(err.Error(), "still encrypts with key version v1") || took < 3*time.Minute {
		t.Fatalf("after %s: %v", took, err)
	}
}

// Metrics that miss a lagging replica: recording the canaries sees it disagree and waits for it.
func TestRecordWaitsForDisagreeingReplica(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{"v1", "v2", t0}, replica{"v1", "v2", at(time.Minute)})
	only := newFakeCluster(fc, replica{"v1", "v2", t0}) // the load balancer's /metrics hits one replica
	ev, took, err := wait(t, fc, Gate{Secrets: f, Metrics: only}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != Metrics || took < time.Minute {
		t.Fatalf("evidence %+v after %s; recording must wait for the second replica (1m)", ev, took)
	}
}

func TestSettle(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{from: "v2"})
	// Rotated long ago: at once.
	ev, took, err := wait(t, fc, Gate{Mode: Settle, RotatedAt: fc.Now().Add(-time.Hour)}, "v2")
	if err != nil || ev.Kind != Settle || took != 0 || len(ev.Notes) == 0 {
		t.Fatalf("old rotation: %+v after %s, %v", ev, took, err)
	}
	// Rotated a minute ago: the rest of the settle delay.
	ev, took, err = wait(t, fc, Gate{Mode: Settle, Secrets: f, RotatedAt: fc.Now().Add(-time.Minute), Settle: 5 * time.Minute}, "v2")
	if err != nil || took < 4*time.Minute || took > 4*time.Minute+5*time.Second || ev.Recorded != DefaultCanaries {
		t.Fatalf("recent rotation: %+v after %s, %v", ev, took, err)
	}
	// A settle delay longer than the timeout fails at once.
	_, took, err = wait(t, fc, Gate{Mode: Settle, Settle: time.Hour, Timeout: time.Minute}, "v2")
	if err == nil || took != 0 || !strings.Contains(err.Error(), "after the timeout") {
		t.Fatalf("settle > timeout: %v after %s", err, took)
	}
}

func TestOffAndNoPrimary(t *testing.T) {
	ev, err := Gate{Mode: Off}.Wait(t.Context(), "v2")
	if err != nil || ev.Kind != Off || !strings.Contains(ev.String(), "no evidence") {
		t.Fatalf("off: %+v %v", ev, err)
	}
	if _, err := (Gate{}).Wait(t.Context(), ""); err == nil {
		t.Fatal("an empty primary version must fail")
	}
}

// The nudge is called while the gate waits, and the gate does not depend on it.
func TestNudge(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{"v1", "v2", at(20 * time.Second)})
	nudges := 0
	ev, _, err := wait(t, fc, Gate{Secrets: f, Etcd: f, Nudge: func(_ context.Context) error { nudges++; return errors.New("503") }}, "v2")
	if err != nil || ev.Kind != Etcd || nudges == 0 {
		t.Fatalf("%+v %v, %d nudges", ev, err, nudges)
	}
}

// Canaries recorded after a settle delay prove a re-run only as well as the settle delay did.
func TestCanaryShortcutAfterSettleIsNotDirect(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, replica{from: "v1"})
	primeCanaries(t, fc, f)
	if by := f.objs[canaryName(0)].s.Annotations[ProvedByAnnotation]; by != string(Settle) {
		t.Fatalf("proved-by %q after settle", by)
	}
	ev, _, err := wait(t, fc, Gate{Mode: Canary, Secrets: f}, "v1")
	if err != nil || ev.Kind != Canary || ev.Direct || !strings.Contains(ev.Detail, "settle") {
		t.Fatalf("%+v %v; want canary evidence marked not direct", ev, err)
	}
}

// kmsDown answers every canary write the way kube-apiserver does when its KMS provider fails.
type kmsDown struct{ *fakeCluster }

func (kmsDown) fault(name string) error {
	return apierrors.NewInternalError(fmt.Errorf("rpc error: failed to encrypt DEK for secrets/%s", name))
}

func (k kmsDown) Create(_ context.Context, s *corev1.Secret, _ metav1.CreateOptions) (*corev1.Secret, error) {
	return nil, k.fault(s.Name)
}

func (k kmsDown) Patch(_ context.Context, name string, _ types.PatchType, _ []byte, _ metav1.PatchOptions, _ ...string) (*corev1.Secret, error) {
	return nil, k.fault(name)
}

// An API server that cannot encrypt never adopts a version: the gate stops after a few samples
// and names KMS, instead of polling until its timeout.
func TestKMSFaultStopsTheGate(t *testing.T) {
	fc := testingclock.NewFakeClock(t0)
	f := newFakeCluster(fc, staggered()...)
	_, took, err := wait(t, fc, Gate{Secrets: kmsDown{f}, Etcd: f, Mode: Etcd}, "v2")
	var kf *KMSFaultError
	if !errors.As(err, &kf) {
		t.Fatalf("err = %v, want a *KMSFaultError", err)
	}
	if took > time.Minute {
		t.Fatalf("the gate stopped after %s, not after a few samples", took)
	}
	if msg := err.Error(); !strings.Contains(msg, "KMS") || !strings.Contains(msg, "failed to encrypt DEK") {
		t.Fatalf("error %q does not name KMS and the API server's answer", msg)
	}
}
