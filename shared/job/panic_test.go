package job

import (
	"context"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/kms"
)

// panickyKMS panics on DescribeKey: a dependency's bug.
type panickyKMS struct{ kms.Client }

func (panickyKMS) DescribeKey(context.Context, string) (kms.KeyMetadata, error) {
	var m map[string]int
	m["describe"]++ // a real runtime panic
	return kms.KeyMetadata{}, nil
}

// TestJobPanicIsAFailedOutcome: a panic in the job's own goroutine (here the KMS client, in the
// guard) is recovered by Run: failed, reason "panic: ...", no error.
func TestJobPanicIsAFailedOutcome(t *testing.T) {
	f := newFixture(t, 10)
	deps := f.deps("inv-1")
	deps.KMS = panickyKMS{f.kms}
	out, err := Run(context.Background(), f.spec(), deps)
	if err != nil {
		t.Fatalf("Run error %v, want nil (the outcome says it)", err)
	}
	if out.Status != StatusFailed || !strings.HasPrefix(out.Reason, "panic: ") || !strings.Contains(out.Reason, "nil map") || out.Job != f.jobID() {
		t.Fatalf("outcome %s %q job %q, want failed with the panic", out.Status, out.Reason, out.Job)
	}
}

// TestJobListerPanicFailsAndReleasesTheLease: a panic in the engine's lister (here in the
// OnListed callback it calls) stops the pass; the job is failed with the reason, its Lease is
// released and the process lives on.
func TestJobListerPanicFailsAndReleasesTheLease(t *testing.T) {
	f := newFixture(t, 50)
	deps := f.deps("inv-1")
	deps.OnListed = func(string, int64) { panic("progress estimate bug") }
	out := mustRun(t, context.Background(), f.spec(), deps)
	if out.Status != StatusFailed || !strings.Contains(out.Reason, "panic: progress estimate bug") {
		t.Fatalf("outcome %s %q, want failed with the panic", out.Status, out.Reason)
	}
	if out.Summary == nil || out.Summary.Panics != 1 || out.Summary.Complete {
		t.Fatalf("summary %+v", out.Summary)
	}
	if _, ok, err := f.store.TryAcquire(context.Background(), "inv-2", time.Minute); err != nil || !ok {
		t.Fatalf("the Lease was not released: acquired=%v err=%v", ok, err)
	}
}

// panickyTickerClock is the real clock whose tickers of one period panic when read: the Lease
// renewal's (LeaseDuration/3).
type panickyTickerClock struct {
	clock.RealClock
	period time.Duration
}

func (c panickyTickerClock) NewTicker(d time.Duration) clock.Ticker {
	if d == c.period {
		return panickyTicker{}
	}
	return c.RealClock.NewTicker(d)
}

type panickyTicker struct{}

func (panickyTicker) C() <-chan time.Time { panic("ticker bug") }
func (panickyTicker) Stop()               {}

// TestLeaseRenewalPanicStopsTheJob: a panic in the Lease renewal goroutine does not take the
// process down; the job stops (its Lease would no longer be renewed) and is failed with the reason.
func TestLeaseRenewalPanicStopsTheJob(t *testing.T) {
	f := newFixture(t, 50)
	deps := f.deps("inv-1")
	deps.LeaseDuration = 30 * time.Second
	deps.Clock = panickyTickerClock{period: deps.LeaseDuration / 3}
	out := mustRun(t, context.Background(), f.spec(), deps)
	if out.Status != StatusFailed || !strings.Contains(out.Reason, "panic: ticker bug") || !strings.Contains(out.Reason, "lease renewal") {
		t.Fatalf("outcome %s %q, want failed with the renewal's panic", out.Status, out.Reason)
	}
}

// watchPanickyKMS panics on DescribeKey when the key watch (keywatch.go) calls it.
type watchPanickyKMS struct{ kms.Client }

func (k watchPanickyKMS) DescribeKey(ctx context.Context, id string) (kms.KeyMetadata, error) {
	if strings.Contains(string(debug.Stack()), "watchKey") {
		panic("describe from the watch")
	}
	return k.Client.DescribeKey(ctx, id)
}

// TestKeyWatchPanicStopsThePass: a panic in the key watch goroutine does not take the process
// down; the pass, no longer watched, stops and the job is failed with the reason.
func TestKeyWatchPanicStopsThePass(t *testing.T) {
	f := newFixture(t, 200)
	f.api.setPatchDelay(50 * time.Millisecond) // a pass of ~2.5 s: the watch ticks every second
	deps := f.deps("inv-1")
	deps.KMS = watchPanickyKMS{f.kms}
	out := mustRun(t, context.Background(), f.spec(), deps)
	if out.Status != StatusFailed || !strings.Contains(out.Reason, "panic: describe from the watch") || !strings.Contains(out.Reason, "key watch") {
		t.Fatalf("outcome %s %q, want failed with the watch's panic", out.Status, out.Reason)
	}
}
