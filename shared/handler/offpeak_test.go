package handler

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/policy"
)

func TestOffPeakFindsAMovedPrimaryVersionOnEveryTick(t *testing.T) {
	e := newEnv(t, nil)
	v1 := "key-hzz63a1b2c3d4e5f6g7h8-v1"
	e.verify(c1, v1)
	e.verify(c2, v1)
	h := e.offpeak()
	outside := time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC) // 14:00 in Shanghai

	res, err := h.Handle(fcContext("tick-1"), timerPayload(t, outside))
	if err != nil {
		t.Fatal(err)
	}
	if res.InWindow || len(res.Keys) != 2 || res.Keys[0].Result != checkCurrent || res.Keys[0].Verified != v1 {
		t.Fatalf("nothing moved: %+v", res)
	}

	// Automatic rotation: no event, the primary moved.
	e.clock.Step(time.Hour)
	v2 := e.kms.Rotate(keyA)
	res, err = h.Handle(fcContext("tick-2"), timerPayload(t, outside))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []string{c1, c2} {
		k := res.Keys[i]
		if k.Cluster != c || k.Result != checkAdded || k.Primary != v2 || k.Verified != v1 || k.Job == "" {
			t.Fatalf("%s check = %+v", c, k)
		}
		p := e.pending(c)
		if len(p) != 1 || p[0].Version != v2 {
			t.Fatalf("%s pending = %+v", c, p)
		}
	}
	if len(res.Clusters) != 0 || len(e.runner.clusters()) != 0 {
		t.Fatalf("outside the window something ran: %+v", res.Clusters)
	}
	// The next tick finds the job pending instead of adding another.
	res, err = h.Handle(fcContext("tick-3"), timerPayload(t, outside))
	if err != nil || res.Keys[0].Result != checkPending || len(e.pending(c1)) != 1 {
		t.Fatalf("tick 3: %+v %v", res.Keys, err)
	}

	// Inside the window (by the trigger time, not the clock) the jobs run and the versions are verified.
	e.clock.Step(time.Hour)
	res, err = h.Handle(fcContext("tick-4"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}
	if !res.InWindow || len(res.Clusters) != 2 || res.Clusters[0].Status != string(StatusDone) || res.Clusters[1].Status != string(StatusDone) {
		t.Fatalf("in window: %+v", res.Clusters)
	}
	res, err = h.Handle(fcContext("tick-5"), timerPayload(t, inWindow))
	if err != nil || res.Keys[0].Result != checkCurrent || res.Keys[0].Verified != v2 || res.Clusters[0].Status != clusterIdle {
		t.Fatalf("after: %+v %+v %v", res.Keys, res.Clusters, err)
	}
}

func TestOffPeakFirstRunEstablishesTheBaseline(t *testing.T) {
	e := newEnv(t, nil)
	res, err := e.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys[0].Result != checkAdded || !strings.Contains(res.Keys[0].Reason, "nothing verified yet") {
		t.Fatalf("keys = %+v", res.Keys)
	}
	if got := e.runner.clusters(); !slices.Equal(got, []string{c1, c2}) {
		t.Fatalf("ran on %v", got)
	}
}

func TestOffPeakTakesTheNextClusterWhenOneIsBusy(t *testing.T) {
	e := newEnv(t, nil)
	e.runner.queue(c1, JobOutcome{Status: StatusBusy, Reason: "already running (lease held by tick-0)"})
	res, err := e.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}
	if res.Clusters[0].Status != string(StatusBusy) || res.Clusters[1].Status != string(StatusDone) {
		t.Fatalf("clusters = %+v", res.Clusters)
	}
	if len(e.pending(c1)) != 1 || len(e.pending(c2)) != 0 {
		t.Fatalf("pending c1 %d c2 %d", len(e.pending(c1)), len(e.pending(c2)))
	}
}

func TestOffPeakStopsAtPartialAndNearTheDeadline(t *testing.T) {
	e := newEnv(t, nil)
	e.runner.queue(c1, JobOutcome{Status: StatusPartial, Reason: "deadline: checkpoint saved"})
	res, err := e.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}
	if res.Clusters[0].Status != string(StatusPartial) || res.Clusters[1].Status != clusterSkipped {
		t.Fatalf("clusters = %+v", res.Clusters)
	}
	if got := e.runner.clusters(); !slices.Equal(got, []string{c1}) {
		t.Fatalf("ran on %v after a partial", got)
	}

	// Less than two stop margins left: nothing starts.
	e2 := newEnv(t, nil)
	e2.clock.SetTime(time.Now()) // the deadline is a real one: the fake clock must agree with it
	ctx, cancel := context.WithDeadline(fcContext("tick"), e2.clock.Now().Add(1500*time.Millisecond))
	defer cancel()
	res, err = e2.offpeak().Handle(ctx, timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}
	if len(e2.runner.clusters()) != 0 || res.Clusters[0].Status != clusterSkipped {
		t.Fatalf("near the deadline: ran %v, clusters %+v", e2.runner.clusters(), res.Clusters)
	}
}

// TestOffPeakNoticesAJobWithoutProgress: a job that made no progress in two invocations in a row
// sends one warning notice naming the cluster, the job and the reason; the first such invocation
// and the third do not.
func TestOffPeakNoticesAJobWithoutProgress(t *testing.T) {
	e := newEnv(t, map[string]string{config.EnvTargets: c1 + "=" + keyA})
	reason := "the time left before the deadline was too short to patch one object"
	for i := 1; i <= 3; i++ {
		e.runner.queue(c1, JobOutcome{Status: StatusPartial, Reason: "stopped without progress", NoProgress: reason, Stalled: i})
		res, err := e.offpeak().Handle(fcContext(fmt.Sprintf("tick-%d", i)), timerPayload(t, inWindow))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Clusters[0].Jobs[0].Outcome; got.NoProgress != reason || got.Stalled != i {
			t.Fatalf("tick %d: outcome %+v, want the no-progress reason and stalled %d in the result", i, got, i)
		}
		e.notifier.mu.Lock()
		sent := len(e.notifier.sent)
		e.notifier.mu.Unlock()
		if want := min(i-1, 1); sent != want {
			t.Fatalf("after tick %d: %d notices, want %d", i, sent, want)
		}
	}
	n := e.notifier.sent[0]
	if n.Severity != policy.Warning || !slices.Equal(n.Clusters, []string{c1}) || !strings.Contains(n.Title, "no progress in 2 invocations") ||
		!strings.Contains(n.Impact, reason) {
		t.Fatalf("notice %+v", n)
	}
	if !strings.Contains(e.logs.String(), "made no progress") {
		t.Fatalf("the notice is not in the log:\n%s", e.logs.String())
	}
}

// TestOffPeakDefersASuspiciousJob: a suspicious outcome sends one notice naming the cluster, key
// and cause, and moves the job out by the backoff: the next ticks do not run the same pass again;
// once the backoff has passed it runs, and the same outcome again sends no second notice.
func TestOffPeakDefersASuspiciousJob(t *testing.T) {
	e := newEnv(t, map[string]string{config.EnvTargets: c1 + "=" + keyA})
	h := e.offpeak()
	cause := "the pass rewrote nothing after the rotation to key version v2"
	e.runner.queue(c1, JobOutcome{Status: StatusSuspicious, Reason: cause}, JobOutcome{Status: StatusSuspicious, Reason: cause})
	if _, err := h.Handle(fcContext("tick-1"), timerPayload(t, inWindow)); err != nil {
		t.Fatal(err)
	}
	if got := len(e.runner.clusters()); got != 1 || len(e.notifier.sent) != 1 {
		t.Fatalf("after the first tick: %d runs, %d notices", got, len(e.notifier.sent))
	}
	n := e.notifier.sent[0]
	if !strings.Contains(n.Title, "suspicious") || !slices.Equal(n.Clusters, []string{c1}) || n.Key == "" || !strings.Contains(n.Impact, cause) {
		t.Fatalf("notice %+v", n)
	}
	p := e.pending(c1)
	if len(p) != 1 || p[0].Attempts != 1 || !p[0].NotBefore.Equal(e.clock.Now().Add(RetryBackoff)) {
		t.Fatalf("pending %+v, want the job deferred by %s", p, RetryBackoff)
	}
	e.clock.Step(10 * time.Minute)
	res, err := h.Handle(fcContext("tick-2"), timerPayload(t, inWindow.Add(10*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(e.runner.clusters()); got != 1 || res.Clusters[0].Status != clusterIdle || res.Clusters[0].Waiting != 1 {
		t.Fatalf("within the backoff: %d runs, cluster %+v", got, res.Clusters[0])
	}
	e.clock.Step(RetryBackoff)
	if _, err := h.Handle(fcContext("tick-3"), timerPayload(t, inWindow.Add(45*time.Minute))); err != nil {
		t.Fatal(err)
	}
	if got := len(e.runner.clusters()); got != 2 || len(e.notifier.sent) != 1 {
		t.Fatalf("after the backoff: %d runs, %d notices; want the job run again and no second notice", got, len(e.notifier.sent))
	}
	if p := e.pending(c1); len(p) != 1 || p[0].Attempts != 2 || !p[0].NotBefore.Equal(e.clock.Now().Add(2*RetryBackoff)) {
		t.Fatalf("pending %+v, want the backoff doubled", p)
	}
}

func TestOffPeakCompletesADoneJobTheRunnerLeftPending(t *testing.T) {
	e := newEnv(t, nil)
	e.runner.noComplete = true
	res, err := e.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.pending(c1)) != 0 || len(res.Clusters[0].Jobs) != 1 || len(res.Clusters[0].Jobs[0].Completed) != 1 {
		t.Fatalf("clusters %+v, pending %d", res.Clusters, len(e.pending(c1)))
	}
	if got := e.runner.clusters(); len(got) != 2 {
		t.Fatalf("ran %v: a done job must not run again", got)
	}
}

func TestOffPeakKeepsGoingPastOneBrokenKeyOrCluster(t *testing.T) {
	e := newEnv(t, nil)
	e.kms.SetState(keyA, kms.KeyStateDisabled)
	res, err := e.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys[0].Result != checkNotEnabled || len(e.pending(c1)) != 0 {
		t.Fatalf("disabled key: %+v", res.Keys)
	}

	e2 := newEnv(t, nil)
	e2.runner.errs = map[string]error{c1: context.DeadlineExceeded}
	res, err = e2.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err == nil {
		t.Fatal("a transient job fault must fail the tick (monitoring)")
	}
	if res.Clusters[0].Status != clusterError || res.Clusters[1].Status != string(StatusDone) {
		t.Fatalf("clusters = %+v", res.Clusters)
	}
}

func TestOffPeakRefusesOtherInput(t *testing.T) {
	e := newEnv(t, nil)
	for name, payload := range map[string][]byte{"event": kmsEvent(t, "CreateKeyVersion", "ev"), "garbage": []byte("nope")} {
		res, err := e.offpeak().Handle(fcContext("tick"), payload)
		if err != nil || res.Error == "" {
			t.Fatalf("%s: %+v %v", name, res, err)
		}
	}
	if len(e.pending(c1)) != 0 {
		t.Fatal("unusable input recorded jobs")
	}
}
