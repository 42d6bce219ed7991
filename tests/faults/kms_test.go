package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// kmsAbortBound bounds how long a run may keep going once KMS fails the API server: the objects in
// flight exhaust their retries (8 attempts over about 25 s) and the run stops.
const kmsAbortBound = 75 * time.Second

// caseKMSDown: the KMS stand-in goes down a third of the way through the pass and the API server
// restarts during the outage, so it has no data key to write with and answers 500 on Secret reads
// and writes. (A KMS v2 API server that keeps running writes with its cached data key for up to 3
// minutes of outage, then fails the same way.) The run backs off, then stops naming KMS; once KMS
// is back, the next run completes.
func caseKMSDown(t *testing.T, order int, tb *table) {
	e := newEnv(t, secretsPerCase, "kms")
	e.rotate()
	kc := e.kubeconfig()
	pass := e.passAt()
	e.w.start()
	outage := make(chan error, 1)
	fired, stop := when(pass.Load, 1, func() {
		if err := e.st.StopKMS(); err != nil {
			outage <- err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		outage <- e.c.RestartAPIServerLive(ctx)
	})
	args := e.runArgs(kc, "--qps", runQPS, "--timeout", "3m")
	r1 := e.cli(args...)
	stop()
	var injected time.Time
	select {
	case injected = <-fired:
	default:
		t.Fatalf("the run ended before KMS went down: %s", r1.brief())
	}
	if err := <-outage; err != nil {
		t.Fatal(err)
	}
	stopped := r1.end.Sub(injected)
	t.Logf("run 1 ended %.1fs after KMS went down", stopped.Seconds())
	if r1.complete() {
		t.Fatalf("the run completed while the API server could not write: %s", r1.brief())
	}
	clearStop(t, r1, "KMS", "in a row")
	if stopped > kmsAbortBound {
		t.Errorf("the run kept going %s after KMS went down, want it stopped within %s", stopped.Round(time.Second), kmsAbortBound)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := e.st.StartKMS(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	// The API server probes its plugin every 10 s while unhealthy; it writes again once it has a key.
	if err := e.waitAPIServer(ctx, e.version, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	writes := time.Since(back)
	r2 := e.cli(args...)
	if !r2.complete() {
		t.Fatalf("the run after KMS came back did not complete: %s", r2.brief())
	}
	p := e.prove(kc)
	tb.add(t, row{order: order, fault: "KMS stand-in down at 1/3 of the pass; the API server restarted in the outage (500 on Secret reads and writes)",
		happened: fmt.Sprintf("run 1 stopped %.0fs after the outage: %s; KMS back: the API server wrote again after %.0fs; run 2: exit 0, complete (%d rewritten)",
			stopped.Seconds(), r1.brief(), writes.Seconds(), r2.summary.Total.Rewritten),
		reencrypted: p.reencrypted(), lost: p.lost, recover: since(back, r2.end) + " after KMS came back"})
}

// caseKeyDisabled: the key is disabled a third of the way through the pass. The API server would
// go on writing with its cached data key; rekey stops at once instead (no retry storm: the
// patches and KMS calls after the disable are counted), the next run is refused by the KMS guard,
// and after EnableKey a run completes.
func caseKeyDisabled(t *testing.T, order int, tb *table) {
	e := newEnv(t, secretsPerCase, "off")
	e.rotate()
	px, kc := e.proxy()
	pass := e.passAt()
	e.w.start()
	var patchesAt int64
	var callsAt map[string]int64
	disabled := make(chan error, 1)
	fired, stop := when(pass.Load, 1, func() {
		callsAt, patchesAt = e.calls.snapshot(), px.Requests("PATCH")
		disabled <- e.st.SetEnabled(false)
	})
	args := e.runArgs(kc, "--qps", runQPS)
	r1 := e.cli(args...)
	stop()
	var injected time.Time
	select {
	case injected = <-fired:
	default:
		t.Fatalf("the run ended before the key was disabled: %s", r1.brief())
	}
	if err := <-disabled; err != nil {
		t.Fatal(err)
	}
	patches := px.Requests("PATCH") - patchesAt
	byAction, rekeyCalls, pluginCalls := e.calls.since(callsAt)
	stopped := r1.end.Sub(injected)
	t.Logf("after DisableKey: run stopped in %s, %d patches, KMS calls by rekey %d, by the plugin %d: %v", stopped.Round(time.Millisecond), patches, rekeyCalls, pluginCalls, byAction)
	if r1.complete() {
		t.Fatalf("the run completed on a disabled key: %s", r1.brief())
	}
	clearStop(t, r1, "Disabled", "EnableKey")
	// At once: within two watch intervals and the patches in flight, at the run's rate.
	if stopped > 3*time.Second || patches > 700 || rekeyCalls > 5 {
		t.Errorf("after DisableKey the run went on for %s with %d patches and %d KMS calls: want a stop at once", stopped, patches, rekeyCalls)
	}

	r2 := e.cli(args...)
	if r2.code != 2 || !strings.Contains(r2.stderr, "refusing to run") || !strings.Contains(r2.stderr, "Disabled") {
		t.Fatalf("the run on the disabled key: %s, want refused by the KMS guard (exit 2)", r2.brief())
	}
	if err := e.st.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	enabled := time.Now()
	r3 := e.cli(args...)
	if !r3.complete() {
		t.Fatalf("the run after EnableKey did not complete: %s", r3.brief())
	}
	p := e.prove(kc)
	tb.add(t, row{order: order, fault: "DisableKey at 1/3 of the pass (the API server keeps writing with its cached data key)",
		happened: fmt.Sprintf("run 1 stopped %.1fs after DisableKey (%d patches and %d KMS calls by rekey after it): %s; run 2 refused by the KMS guard (exit 2); EnableKey; run 3: exit 0, complete (%d rewritten)",
			stopped.Seconds(), patches, rekeyCalls, short(r1.summary.StopReason), r3.summary.Total.Rewritten),
		reencrypted: p.reencrypted(), lost: p.lost, recover: since(enabled, r3.end) + " after EnableKey"})
}
