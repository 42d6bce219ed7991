package state

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestLeaseContentionExpiryAndRelease(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	a, clk := newStore(t, cs, "c1")
	b, err := New(cs, "c1", WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}

	la, ok, err := a.TryAcquire(ctx, "inv-a", 30*time.Second)
	if err != nil || !ok {
		t.Fatalf("first TryAcquire: ok=%v err=%v", ok, err)
	}
	if i := la.Info(); i.Holder != "inv-a" || i.Duration != 30*time.Second || !i.Expires.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("lease %+v", i)
	}

	clk.Step(30 * time.Second) // exactly at expiry: still live
	lb, ok, err := b.TryAcquire(ctx, "inv-b", 30*time.Second)
	if err != nil || ok {
		t.Fatalf("second holder while the lease is live: ok=%v err=%v, want not acquired and no error", ok, err)
	}
	if lb.Info().Holder != "inv-a" {
		t.Fatalf("not-acquired lease names %q, want the live holder inv-a", lb.Info().Holder)
	}
	if err := lb.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Renew of a lease not acquired: %v, want ErrLeaseLost", err)
	}

	clk.Step(10 * time.Second)
	if err := la.Renew(ctx); err != nil { // a expired but nobody took over: renewing is fine
		t.Fatalf("Renew: %v", err)
	}
	if _, ok, _ := b.TryAcquire(ctx, "inv-b", 30*time.Second); ok {
		t.Fatal("b acquired a lease just renewed")
	}

	clk.Step(31 * time.Second) // a crashed: no renewal for longer than the duration
	lb, ok, err = b.TryAcquire(ctx, "inv-b", 30*time.Second)
	if err != nil || !ok {
		t.Fatalf("takeover of an expired lease: ok=%v err=%v", ok, err)
	}
	if i := lb.Info(); i.Holder != "inv-b" || i.Transitions != 1 || !i.Acquired.Equal(clk.Now()) {
		t.Fatalf("taken-over lease %+v: want holder inv-b, 1 transition, acquired now", i)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("old holder's Renew after takeover: %v, want ErrLeaseLost", err)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatalf("old holder's Release must leave the new holder alone: %v", err)
	}
	if _, ok, _ := a.TryAcquire(ctx, "inv-c", time.Minute); ok {
		t.Fatal("the old holder's Release freed the new holder's lease")
	}

	// Re-acquiring one's own lease renews it; releasing frees it at once.
	if _, ok, err := b.TryAcquire(ctx, "inv-b", 30*time.Second); err != nil || !ok {
		t.Fatalf("holder re-acquiring its own lease: ok=%v err=%v", ok, err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lb.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Renew after Release: %v, want ErrLeaseLost", err)
	}
	lc, ok, err := a.TryAcquire(ctx, "inv-c", time.Minute)
	if err != nil || !ok || lc.Info().Transitions != 1 {
		t.Fatalf("acquire after release: ok=%v err=%v info=%+v", ok, err, lc)
	}
}

func TestLeaseConcurrentAcquireHasOneWinner(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	var wg sync.WaitGroup
	wins := make([]bool, 8)
	errs := make([]error, 8)
	for i := range wins {
		s, _ := newStore(t, cs, "c1")
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, wins[i], errs[i] = s.TryAcquire(ctx, string(rune('a'+i)), time.Minute)
		}()
	}
	wg.Wait()
	n := 0
	for i, w := range wins {
		if errs[i] != nil {
			t.Fatalf("TryAcquire %d: %v", i, errs[i])
		}
		if w {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 8 concurrent callers acquired, want 1", n)
	}
}

func TestLeaseArguments(t *testing.T) {
	s, _ := newStore(t, rvClient(t), "c1")
	if _, _, err := s.TryAcquire(context.Background(), "", time.Minute); err == nil {
		t.Error("empty holder accepted")
	}
	if _, _, err := s.TryAcquire(context.Background(), "x", 0); err == nil {
		t.Error("zero duration accepted")
	}
	l, ok, err := s.TryAcquire(context.Background(), "x", 1500*time.Millisecond)
	if err != nil || !ok || l.Info().Duration != 2*time.Second {
		t.Fatalf("1.5s lease: ok=%v err=%v info=%+v, want rounded up to 2s", ok, err, l.Info())
	}
}
