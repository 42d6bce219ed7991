package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/state"
)

// stateLease: one run per cluster. Each invocation has a client and a Store of its own, as separate
// FC instances would.
func stateLease(t *testing.T, c *controlplane.Cluster) {
	ctx := context.Background()
	inv := func(cluster string) *state.Store {
		return stateStore(t, userClient(t, c, functionUser, nil), cluster, nil)
	}

	t.Run("contention", func(t *testing.T) {
		a, b := inv("c-lease"), inv("c-lease")
		la, ok, err := a.TryAcquire(ctx, "inv-a", 30*time.Second)
		if err != nil || !ok {
			t.Fatalf("first invocation: acquired=%v err=%v", ok, err)
		}
		lb, ok, err := b.TryAcquire(ctx, "inv-b", 30*time.Second)
		if err != nil || ok {
			t.Fatalf("second invocation: acquired=%v err=%v; want \"already running\" (false, no error)", ok, err)
		}
		t.Logf("second invocation: already running: %s", lb)
		if lb.Info().Holder != "inv-a" {
			t.Fatalf("the refused invocation sees holder %q, want inv-a", lb.Info().Holder)
		}
		if err := la.Renew(ctx); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if err := la.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if _, ok, err := b.TryAcquire(ctx, "inv-b", 30*time.Second); err != nil || !ok {
			t.Fatalf("after release: acquired=%v err=%v; want the Lease at once", ok, err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		const n = 5
		stores := make([]*state.Store, n)
		for i := range stores {
			stores[i] = inv("c-lease-race")
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		won := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, won[i], errs[i] = stores[i].TryAcquire(ctx, fmt.Sprint("inv-", i), time.Minute)
			}()
		}
		close(start)
		wg.Wait()
		winners := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("invocation %d: %v", i, errs[i])
			}
			if won[i] {
				winners++
			}
		}
		if winners != 1 {
			t.Fatalf("%d of %d concurrent invocations acquired the Lease, want 1", winners, n)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		// A holder that crashed stops renewing; its Lease (1 s) is taken over once expired.
		crashed, next := inv("c-lease-expiry"), inv("c-lease-expiry")
		lc, ok, err := crashed.TryAcquire(ctx, "inv-crashed", time.Second)
		if err != nil || !ok {
			t.Fatalf("acquire: %v %v", ok, err)
		}
		begin := time.Now()
		if _, ok, err := next.TryAcquire(ctx, "inv-next", time.Second); err != nil || ok {
			t.Fatalf("while live: acquired=%v err=%v", ok, err)
		}
		var ln *state.Lease
		deadline := time.Now().Add(20 * time.Second)
		for ln == nil {
			l, ok, err := next.TryAcquire(ctx, "inv-next", 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				ln = l
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the crashed holder's 1 s Lease was not taken over within 20 s: %s", l)
			}
			time.Sleep(100 * time.Millisecond)
		}
		waited := time.Since(begin)
		if waited < 900*time.Millisecond {
			t.Fatalf("taken over after %v, before the 1 s Lease expired", waited)
		}
		if i := ln.Info(); i.Holder != "inv-next" || i.Transitions != 1 {
			t.Fatalf("taken-over Lease %+v", i)
		}
		t.Logf("taken over %v after the crashed holder's last renewal", waited.Round(10*time.Millisecond))
		if err := lc.Renew(ctx); !errors.Is(err, state.ErrLeaseLost) {
			t.Fatalf("the old holder's Renew: %v, want ErrLeaseLost", err)
		}
		if err := lc.Release(ctx); err != nil {
			t.Fatalf("the old holder's Release: %v", err)
		}
		if _, ok, _ := crashed.TryAcquire(ctx, "inv-third", time.Second); ok {
			t.Fatal("the old holder's Release freed the new holder's Lease")
		}
	})

	t.Run("injected-clock", func(t *testing.T) {
		// Expiry is judged by the injected clock, against the Lease as the API server stored it.
		clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
		a := stateStore(t, userClient(t, c, functionUser, nil), "c-lease-clock", clk)
		b := stateStore(t, userClient(t, c, functionUser, nil), "c-lease-clock", clk)
		if _, ok, err := a.TryAcquire(ctx, "inv-a", 10*time.Minute); err != nil || !ok {
			t.Fatalf("acquire: %v %v", ok, err)
		}
		clk.Step(10 * time.Minute)
		if _, ok, _ := b.TryAcquire(ctx, "inv-b", time.Minute); ok {
			t.Fatal("taken over at the expiry instant")
		}
		clk.Step(time.Second)
		if _, ok, err := b.TryAcquire(ctx, "inv-b", time.Minute); err != nil || !ok {
			t.Fatalf("after expiry by the injected clock: acquired=%v err=%v", ok, err)
		}
	})
}
