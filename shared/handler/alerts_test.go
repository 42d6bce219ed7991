package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/notify"
	"github.com/rekey-dev/rekey/shared/policy"
)

// kmsEventKey is kmsEvent with the event's requestParameters.KeyId replaced (an alias, an ARN).
func kmsEventKey(t *testing.T, name, id, keyRef string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(kmsEvent(t, name, id), &m); err != nil {
		t.Fatal(err)
	}
	m["data"].(map[string]any)["requestParameters"].(map[string]any)["KeyId"] = keyRef
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// failWrites makes cluster c's state writes fail with a 503 until the returned func is called.
func (e *env) failWrites(c string) (recover func()) {
	down := true
	e.clients[c].PrependReactor("*", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if down && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			return true, nil, apierrors.NewServiceUnavailable("etcd is unavailable")
		}
		return false, nil, nil
	})
	return func() { down = false }
}

func (e *env) sentCount() int {
	e.notifier.mu.Lock()
	defer e.notifier.mu.Unlock()
	return len(e.notifier.sent)
}

func (e *env) handled(c string, ev events.DedupKey) bool {
	e.t.Helper()
	st, err := e.stores[c].Snapshot(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return st.Handled[ev]
}

// TestDisableKeyOnASharedKeyWithOneStateFailing: a DisableKey on a key shared by c1 and c2 while
// c2's state cannot be written: the alert goes out (once), the invocation fails so that FC retries,
// and once c2 recovers the retry records the event on both clusters without a second alert.
func TestDisableKeyOnASharedKeyWithOneStateFailing(t *testing.T) {
	e := newEnv(t, nil)
	h := e.rotation()
	recover := e.failWrites(c2)
	payload := kmsEvent(t, "DisableKey", "ev-d")
	ev := events.DedupKey{Source: "acs.kms", ID: "ev-d"}
	res, err := h.Handle(fcContext("try-1"), payload)
	if err == nil {
		t.Fatal("c2's state failing must fail the invocation (FC retries it)")
	}
	if e.sentCount() != 1 || res.Decisions[0].Notified != notifiedSent || len(res.Decisions[0].Unrecorded) != 1 ||
		!strings.HasPrefix(res.Decisions[0].Unrecorded[0], c2) {
		t.Fatalf("first try: %d sent, decision %+v", e.sentCount(), res.Decisions[0])
	}
	if e.handled(c1, ev) != true || e.handled(c2, ev) {
		t.Fatal("want the event handled on c1 only after the first try")
	}
	recover()
	res, err = h.Handle(fcContext("try-2"), payload)
	if err != nil {
		t.Fatalf("retry after c2 recovered: %v", err)
	}
	if e.sentCount() != 1 || res.Decisions[0].Notified != notifiedDuplicate {
		t.Fatalf("retry: %d sent (want 1), notified %q", e.sentCount(), res.Decisions[0].Notified)
	}
	if !e.handled(c1, ev) || !e.handled(c2, ev) {
		t.Fatal("want the event recorded on c1 and c2 after the retry")
	}
}

// TestOneUnreachableClusterStopsNothing: of three watched clusters one cannot be opened (CS 404,
// then a refused connection): the DisableKey alert goes out naming all three, the other two get
// their jobs and version checks, and the unreachable one is named in the result and the log. A 404
// is permanent (no retry); a refused connection fails the invocation at the end so FC retries.
func TestOneUnreachableClusterStopsNothing(t *testing.T) {
	const c3 = "c3"
	for _, tc := range []struct {
		name      string
		err       error
		transient bool
	}{
		{"CS answers 404", notFoundErr("cluster c3 not found"), false},
		{"connection refused", fmt.Errorf("dial tcp 10.0.0.3:6443: %w", errConnRefused()), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, map[string]string{config.EnvTargets: c1 + "=" + keyA + "," + c2 + "=" + keyA + "," + c3 + "=" + keyA})
			e.openErr[c3] = tc.err
			res, err := e.rotation().Handle(fcContext("req-d"), kmsEvent(t, "DisableKey", "ev-d"))
			if (err != nil) != tc.transient {
				t.Fatalf("error %v, want one only for a transient failure", err)
			}
			if e.sentCount() != 1 || !slices.Equal(e.notifier.sent[0].Clusters, []string{c1, c2, c3}) {
				t.Fatalf("sent %+v", e.notifier.sent)
			}
			if len(res.Unreachable) != 1 || !strings.HasPrefix(res.Unreachable[0], c3) || !strings.Contains(e.logs.String(), `"cluster":"c3: open cluster c3`) {
				t.Fatalf("unreachable %v; log:\n%s", res.Unreachable, e.logs)
			}
			res, _ = e.rotation().Handle(fcContext("req-r"), kmsEvent(t, "CreateKeyVersion", "ev-r"))
			if len(e.pending(c1)) != 1 || len(e.pending(c2)) != 1 || len(res.Decisions[0].Unrecorded) != 1 {
				t.Fatalf("jobs: c1 %d, c2 %d, unrecorded %v", len(e.pending(c1)), len(e.pending(c2)), res.Decisions[0].Unrecorded)
			}
			tick, _ := e.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
			if len(tick.Keys) != 2 {
				t.Fatalf("version checks %+v, want c1 and c2", tick.Keys)
			}
			var statuses []string
			for _, r := range tick.Clusters {
				statuses = append(statuses, r.Cluster+" "+r.Status)
			}
			if !slices.Equal(statuses, []string{c1 + " done", c2 + " done", c3 + " error"}) {
				t.Fatalf("runs %v", statuses)
			}
		})
	}
}

// TestAnAlertIsDeliveredExactlyOnce: delivery failing transiently three times fails three
// invocations and succeeds on the fourth: one alert. A sender that crashed between writing the
// outbox and delivering leaves a claim: the retry does not send while it lives, and the timer's
// sweep sends it once it expired: one alert.
func TestAnAlertIsDeliveredExactlyOnce(t *testing.T) {
	temp := func() error { return &notify.DeliveryError{Status: 503, Attempts: 4, Temporary: true} }
	e := newEnv(t, nil)
	e.notifier.errs = []error{temp(), temp(), temp()}
	payload := kmsEvent(t, "DisableKey", "ev-1")
	for i := 1; i <= 3; i++ {
		res, err := e.rotation().Handle(fcContext(fmt.Sprintf("try-%d", i)), payload)
		if err == nil || !strings.HasPrefix(res.Decisions[0].Notified, notifiedPending) {
			t.Fatalf("try %d: %v, notified %q: want a failed invocation, the notice pending", i, err, res.Decisions[0].Notified)
		}
	}
	if _, err := e.rotation().Handle(fcContext("try-4"), payload); err != nil || e.sentCount() != 1 {
		t.Fatalf("try 4: %v, %d sent", err, e.sentCount())
	}
	if _, err := e.rotation().Handle(fcContext("try-5"), payload); err != nil || e.sentCount() != 1 {
		t.Fatalf("a redelivery: %v, %d sent", err, e.sentCount())
	}

	// The crash: a sender claimed the notice (outbox written) and died before sending.
	f := newEnv(t, nil)
	ev := events.DedupKey{Source: "acs.kms", ID: "ev-2"}
	for _, c := range []string{c1, c2} {
		if _, err := f.stores[c].Claim(context.Background(), ev, policy.Notice{Severity: policy.Critical, Title: "DisableKey", Clusters: []string{c1, c2}}, "crashed"); err != nil {
			t.Fatal(err)
		}
	}
	res, err := f.rotation().Handle(fcContext("fc-retry"), kmsEvent(t, "DisableKey", "ev-2"))
	if err != nil || f.sentCount() != 0 || !strings.Contains(res.Decisions[0].Notified, "another invocation") {
		t.Fatalf("retry while the crashed claim lives: %v, %d sent, notified %q", err, f.sentCount(), res.Decisions[0].Notified)
	}
	f.clock.Step(3 * time.Minute)
	tick, err := f.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil || f.sentCount() != 1 || len(tick.Notices) == 0 {
		t.Fatalf("sweep: %v, %d sent, notices %v", err, f.sentCount(), tick.Notices)
	}
	if _, err := f.offpeak().Handle(fcContext("tick-2"), timerPayload(t, inWindow)); err != nil || f.sentCount() != 1 {
		t.Fatalf("second sweep: %v, %d sent", err, f.sentCount())
	}
}

// TestTimerAlertsAnUnusableKeyWithoutAnEvent: the timer finds the key Disabled though no event came:
// one critical notice; the next ticks do not repeat it within the day; a day later it is repeated;
// after EnableKey one recovery notice.
func TestTimerAlertsAnUnusableKeyWithoutAnEvent(t *testing.T) {
	e := newEnv(t, nil)
	e.kms.SetState(keyA, kms.KeyStateDisabled)
	tick := func(name string) OffPeakResult {
		t.Helper()
		res, err := e.offpeak().Handle(fcContext(name), timerPayload(t, outside))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	tick("t1")
	if e.sentCount() != 1 || e.notifier.sent[0].Severity != policy.Critical || !strings.Contains(e.notifier.sent[0].Title, "Disabled") ||
		!slices.Equal(e.notifier.sent[0].Clusters, []string{c1, c2}) {
		t.Fatalf("after the first tick: %+v", e.notifier.sent)
	}
	for i := 2; i <= 4; i++ {
		e.clock.Step(5 * time.Minute)
		tick(fmt.Sprintf("t%d", i))
	}
	if e.sentCount() != 1 {
		t.Fatalf("%d notices within the day, want 1", e.sentCount())
	}
	e.clock.Step(KeyNoticeRepeat)
	tick("next-day")
	if e.sentCount() != 2 {
		t.Fatalf("%d notices a day later, want 2", e.sentCount())
	}
	e.kms.SetState(keyA, kms.KeyStateEnabled)
	e.clock.Step(5 * time.Minute)
	tick("enabled")
	tick("enabled-again")
	if e.sentCount() != 3 || e.notifier.sent[2].Severity != policy.Info || !strings.Contains(e.notifier.sent[2].Title, "Enabled again") {
		t.Fatalf("after EnableKey: %+v", e.notifier.sent)
	}
}

// TestAnEventAlertIsNotRepeatedByTheTimer: the rotation function alerted on DisableKey; the timer's
// key check does not send a second critical notice the same day.
func TestAnEventAlertIsNotRepeatedByTheTimer(t *testing.T) {
	e := newEnv(t, nil)
	e.kms.SetState(keyA, kms.KeyStateDisabled)
	if _, err := e.rotation().Handle(fcContext("ev"), kmsEvent(t, "DisableKey", "ev-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.offpeak().Handle(fcContext("tick"), timerPayload(t, outside)); err != nil {
		t.Fatal(err)
	}
	if e.sentCount() != 1 || e.notifier.sent[0].KeyState != kms.KeyStateDisabled || !strings.Contains(e.notifier.sent[0].Impact, "now Disabled") {
		t.Fatalf("sent %+v", e.notifier.sent)
	}
}

// TestAnEventRecoveryIsNotRepeatedByTheTimer: the timer found the key Disabled and alerted;
// EnableKey's event sends the recovery notice; the next ticks send no second recovery (the e2e
// twin saw one before the fix: an extra notice at the next tick).
func TestAnEventRecoveryIsNotRepeatedByTheTimer(t *testing.T) {
	e := newEnv(t, nil)
	e.kms.SetState(keyA, kms.KeyStateDisabled)
	if _, err := e.offpeak().Handle(fcContext("tick-disabled"), timerPayload(t, outside)); err != nil {
		t.Fatal(err)
	}
	e.kms.SetState(keyA, kms.KeyStateEnabled)
	if _, err := e.rotation().Handle(fcContext("ev"), kmsEvent(t, "EnableKey", "ev-enable")); err != nil {
		t.Fatal(err)
	}
	if e.sentCount() != 2 || e.notifier.sent[1].KeyState != kms.KeyStateEnabled {
		t.Fatalf("after the timer's alert and EnableKey: %+v, want the critical notice and the event's recovery", e.notifier.sent)
	}
	for i := range 2 {
		e.clock.Step(5 * time.Minute)
		if _, err := e.offpeak().Handle(fcContext(fmt.Sprintf("tick-%d", i)), timerPayload(t, outside)); err != nil {
			t.Fatal(err)
		}
	}
	if e.sentCount() != 2 {
		t.Fatalf("%d notices, want 2: the timer repeated the recovery %+v", e.sentCount(), e.notifier.sent[2:])
	}
}

// TestKeysAreMatchedByIdentity: a key configured by ID matches events naming it by alias and by
// ARN (DisableKey, CreateKeyVersion); a key configured by alias whose alias moves to another key is
// reported.
func TestKeysAreMatchedByIdentity(t *testing.T) {
	e := newEnv(t, nil)
	e.kms.SetAlias("alias/k8s-secrets", keyA)
	res, err := e.rotation().Handle(fcContext("a"), kmsEventKey(t, "DisableKey", "ev-a", "alias/k8s-secrets"))
	if err != nil || res.Decisions[0].Kind != policy.Alert || e.sentCount() != 1 {
		t.Fatalf("DisableKey by alias: %v %+v", err, res.Decisions)
	}
	arn := "acs:kms:" + region + ":" + account + ":key/" + keyA
	res, err = e.rotation().Handle(fcContext("b"), kmsEventKey(t, "CreateKeyVersion", "ev-b", arn))
	if err != nil || res.Decisions[0].Kind != policy.Rotate || len(e.pending(c1)) != 1 {
		t.Fatalf("CreateKeyVersion by ARN: %v %+v", err, res.Decisions)
	}
	aliasARN := "acs:kms:" + region + ":" + account + ":alias/k8s-secrets"
	res, err = e.rotation().Handle(fcContext("c"), kmsEventKey(t, "ScheduleKeyDeletion", "ev-c", aliasARN))
	if err != nil || res.Decisions[0].Kind != policy.Alert {
		t.Fatalf("ScheduleKeyDeletion by alias ARN: %v %+v", err, res.Decisions)
	}

	g := newEnv(t, map[string]string{config.EnvTargets: c1 + "=alias/k8s-secrets"})
	g.kms.SetAlias("alias/k8s-secrets", keyA)
	const other = "key-other000000000000000"
	g.kms.CreateKey(other)
	if _, err := g.offpeak().Handle(fcContext("t1"), timerPayload(t, outside)); err != nil {
		t.Fatal(err)
	}
	g.kms.SetAlias("alias/k8s-secrets", other)
	res2, err := g.offpeak().Handle(fcContext("t2"), timerPayload(t, outside))
	if err != nil {
		t.Fatal(err)
	}
	if g.sentCount() != 1 || !strings.Contains(g.notifier.sent[0].Title, "now names KMS key "+other) || len(res2.Notices) != 1 {
		t.Fatalf("alias moved: sent %+v, notices %v", g.notifier.sent, res2.Notices)
	}
}

// TestImmediateModeRunsWithoutAnotherEvent: REKEY_RUN_MODE=immediate, REKEY_SETTLE=2m: the event's
// own invocation finds the job not due yet; the watch timer's next tick (every 5 minutes, at any
// hour) runs it, within the settle delay plus 5 minutes of the event.
func TestImmediateModeRunsWithoutAnotherEvent(t *testing.T) {
	e := newEnv(t, map[string]string{config.EnvRunMode: "immediate", config.EnvSettle: "2m"})
	if _, err := e.rotation().Handle(fcContext("ev"), kmsEvent(t, "CreateKeyVersion", "ev-1")); err != nil {
		t.Fatal(err)
	}
	if n := len(e.runner.clusters()); n != 0 {
		t.Fatalf("ran %d jobs before the settle delay", n)
	}
	e.clock.Step(5 * time.Minute)
	res, err := e.offpeak().Handle(fcContext("watch"), watchPayload(t, eventTime.Add(5*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if res.InWindow || res.Mode != ModeWatch || len(e.runner.clusters()) != 2 {
		t.Fatalf("watch tick outside the window: %+v; ran %v", res, e.runner.clusters())
	}
}

// TestTheWindowEndsTheJob: a tick at 04:58 with the window ending at 05:00 gives its jobs until
// 05:00 by the tick's clock (not the function's 15 minutes); a watch tick in off-peak mode runs none.
func TestTheWindowEndsTheJob(t *testing.T) {
	e := newEnv(t, nil)
	sh, _ := time.LoadLocation("Asia/Shanghai")
	at := time.Date(2026, 11, 29, 4, 58, 0, 0, sh)
	ctx, cancel := context.WithTimeout(fcContext("late"), 15*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := e.offpeak().Handle(ctx, timerPayload(t, at)); err != nil {
		t.Fatal(err)
	}
	if len(e.runner.deadlines) == 0 {
		t.Fatal("no job ran")
	}
	for _, dl := range e.runner.deadlines {
		if dl.IsZero() || dl.After(start.Add(2*time.Minute+time.Second)) {
			t.Fatalf("job deadline %s, want by the window's end, 2 minutes after the tick", dl.Sub(start))
		}
	}
	f := newEnv(t, nil)
	if _, err := f.offpeak().Handle(fcContext("watch"), watchPayload(t, inWindow)); err != nil || len(f.runner.clusters()) != 0 {
		t.Fatalf("a watch tick in off-peak mode ran %v (%v)", f.runner.clusters(), err)
	}
}

// TestABatchWithAMalformedElement: of three events the second is malformed: the first and the third
// are decided, the second reported by position.
func TestABatchWithAMalformedElement(t *testing.T) {
	e := newEnv(t, nil)
	batch := "[" + string(kmsEvent(t, "CreateKeyVersion", "ev-1")) + `,{"id":7},` + string(kmsEvent(t, "DisableKey", "ev-3")) + "]"
	res, err := e.rotation().Handle(fcContext("batch"), []byte(batch))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Decisions) != 2 || res.Decisions[0].Kind != policy.Rotate || res.Decisions[1].Kind != policy.Alert ||
		len(res.Rejected) != 1 || !strings.Contains(res.Rejected[0], "element 1") {
		t.Fatalf("result %+v", res)
	}
}

// outside is a trigger time outside the default window (14:00 in Shanghai).
var outside = time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)

func watchPayload(t *testing.T, at time.Time) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"triggerTime": at.UTC().Format(time.RFC3339), "triggerName": "watch", "payload": `{"mode":"watch"}`})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// notFoundErr is CS's answer for a cluster that does not exist (deleted).
func notFoundErr(msg string) error {
	return alicloud.NewAPIError(404, "ErrorClusterNotFound", msg)
}

func errConnRefused() error { return syscall.ECONNREFUSED }
