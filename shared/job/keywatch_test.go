package job

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
)

// TestWatchKeyStopsWhenTheKeyIsDisabled: the watch checks the key every KeyWatchInterval, rides
// out a KMS error, and cancels the pass with a *KeyUnusableError naming the state and the fix at
// the first check that sees the key disabled; then it makes no more calls.
func TestWatchKeyStopsWhenTheKeyIsDisabled(t *testing.T) {
	for _, keyState := range []string{kms.KeyStateDisabled, kms.KeyStatePendingDeletion} {
		t.Run(keyState, func(t *testing.T) {
			k := kmsfake.New()
			k.CreateKey(testKey)
			clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			r := &runner{spec: Spec{KeyID: testKey}, deps: Deps{KMS: k, Clock: clk}, log: zerolog.Nop()}
			ctx, stop := r.watchKey(context.Background())
			defer stop()
			tick := func(wantCalls int) {
				t.Helper()
				clk.Step(KeyWatchInterval)
				waitFor(t, func() bool { return k.Calls(kmsfake.OpDescribeKey) >= wantCalls })
			}
			tick(1)
			k.FailNext(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable())
			tick(2)
			if ctx.Err() != nil {
				t.Fatalf("the watch stopped the pass on an enabled key or a KMS error: %v", context.Cause(ctx))
			}
			k.SetState(testKey, keyState)
			tick(3)
			waitFor(t, func() bool { return ctx.Err() != nil })
			var ke *KeyUnusableError
			if cause := context.Cause(ctx); !errors.As(cause, &ke) || ke.State != keyState || !strings.Contains(cause.Error(), "before running again") {
				t.Fatalf("cause %v, want a *KeyUnusableError for %s", cause, keyState)
			}
			clk.Step(10 * KeyWatchInterval)
			time.Sleep(20 * time.Millisecond)
			if n := k.Calls(kmsfake.OpDescribeKey); n != 3 {
				t.Fatalf("%d DescribeKey calls, want 3: the watch must end when it stops the pass", n)
			}
		})
	}
}

// TestWatchKeyWithoutKey: without a key there is nothing to watch.
func TestWatchKeyWithoutKey(t *testing.T) {
	r := &runner{deps: Deps{Clock: clocktesting.NewFakeClock(time.Now())}, log: zerolog.Nop()}
	ctx := context.Background()
	if got, stop := r.watchKey(ctx); got != ctx {
		t.Fatal("a job without a key got a watched context")
	} else {
		stop()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
