package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

func TestCheckpointRateIsBounded(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	s, clk := newStore(t, cs, "c1")
	c, err := s.OpenCheckpoint(ctx, "j1", "inv-1", CheckpointOptions{Interval: 5 * time.Second, Objects: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, found := c.Loaded(); found {
		t.Fatal("a fresh job has no checkpoint")
	}
	save := func(done int64, want bool) {
		t.Helper()
		wrote, err := c.Save(ctx, Checkpoint{Phase: PhasePass, Resource: "secrets", Continue: "t", Counts: reencrypt.Counts{Listed: done, Current: done}})
		if err != nil {
			t.Fatal(err)
		}
		if wrote != want {
			t.Fatalf("Save(done=%d) at %s wrote=%v, want %v", done, clk.Since(t0), wrote, want)
		}
	}
	save(0, true) // the first Save always writes
	for i := int64(1); i <= 50; i++ {
		clk.Step(50 * time.Millisecond)
		save(i*10, false) // 2.5 s, 500 objects: neither bound reached
	}
	clk.Step(2500 * time.Millisecond)
	save(600, true) // 5 s since the last write
	save(1599, false)
	save(1600, true) // 1000 objects since the last write
	if c.Writes() != 3 {
		t.Fatalf("%d writes, want 3", c.Writes())
	}
	if got := countActions(cs, "create", "configmaps") + countActions(cs, "update", "configmaps"); got != 3 {
		t.Fatalf("%d API writes, want 3", got)
	}
	if err := c.Flush(ctx, Checkpoint{Phase: PhaseConvergence, Resource: "secrets", Continue: "t2", Counts: reencrypt.Counts{Listed: 7}, Invocations: 2}); err != nil {
		t.Fatal(err)
	}
	got, found, err := s.LoadCheckpoint(ctx, "j1")
	if err != nil || !found {
		t.Fatalf("LoadCheckpoint: found=%v err=%v", found, err)
	}
	if got.Job != "j1" || got.Holder != "inv-1" || got.Phase != PhaseConvergence || got.Continue != "t2" || got.Counts.Listed != 7 || got.Invocations != 2 || !got.Updated.Equal(clk.Now()) {
		t.Fatalf("stored checkpoint %+v", got)
	}

	// The next invocation resumes from it.
	next, err := s.OpenCheckpoint(ctx, "j1", "inv-2", CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cp, found := next.Loaded(); !found || cp.Continue != "t2" || cp.Holder != "inv-1" {
		t.Fatalf("Loaded = %+v, %v; want inv-1's checkpoint", cp, found)
	}
}

func TestCheckpointSecondWriterCannotClobber(t *testing.T) {
	ctx := context.Background()
	cs := rvClient(t)
	s, _ := newStore(t, cs, "c1")
	first, err := s.OpenCheckpoint(ctx, "j1", "inv-1", CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Flush(ctx, Checkpoint{Phase: PhasePass, Continue: "page-1"}); err != nil {
		t.Fatal(err)
	}

	// Two invocations open the checkpoint at the same resourceVersion (a Lease expired under a slow
	// holder): the one that writes first wins, the other must stop.
	a, err := s.OpenCheckpoint(ctx, "j1", "inv-2", CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Flush(ctx, Checkpoint{Phase: PhasePass, Continue: "page-2"}); err != nil {
		t.Fatalf("the holder that wrote last may write again: %v", err)
	}
	if err := a.Flush(ctx, Checkpoint{Phase: PhasePass, Continue: "stale"}); !errors.Is(err, ErrCheckpointTaken) {
		t.Fatalf("stale writer: %v, want ErrCheckpointTaken", err)
	}
	if err := first.Flush(ctx, Checkpoint{Phase: PhasePass, Continue: "page-3"}); err != nil {
		t.Fatal(err)
	}
	cp, _, err := s.LoadCheckpoint(ctx, "j1")
	if err != nil || cp.Continue != "page-3" || cp.Holder != "inv-1" {
		t.Fatalf("stored %+v (%v), want inv-1's page-3", cp, err)
	}

	// A conflict with one's own earlier write (a retried request that had succeeded) is not a takeover.
	again, err := s.OpenCheckpoint(ctx, "j1", "inv-1", CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Flush(ctx, Checkpoint{Phase: PhasePass, Continue: "page-4"}); err != nil {
		t.Fatal(err)
	}
	if err := again.Flush(ctx, Checkpoint{Phase: PhasePass, Continue: "page-5"}); err != nil {
		t.Fatalf("same holder after a conflict: %v", err)
	}

	// A checkpoint deleted under a writer (the job completed elsewhere) stops it too.
	if err := s.DeleteCheckpoint(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if err := again.Flush(ctx, Checkpoint{Phase: PhasePass}); !errors.Is(err, ErrCheckpointTaken) {
		t.Fatalf("write after delete: %v, want ErrCheckpointTaken", err)
	}
	if err := s.DeleteCheckpoint(ctx, "j1"); err != nil {
		t.Fatalf("deleting a missing checkpoint: %v", err)
	}
}

func TestCheckpointConcurrentFirstWriters(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, rvClient(t), "c1")
	a, _ := s.OpenCheckpoint(ctx, "j1", "inv-a", CheckpointOptions{})
	b, _ := s.OpenCheckpoint(ctx, "j1", "inv-b", CheckpointOptions{})
	if err := a.Flush(ctx, Checkpoint{Continue: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx, Checkpoint{Continue: "b"}); !errors.Is(err, ErrCheckpointTaken) {
		t.Fatalf("second creator: %v, want ErrCheckpointTaken", err)
	}
}
