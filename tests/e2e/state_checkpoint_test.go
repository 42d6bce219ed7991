package e2e

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/state"
)

// stateCheckpoint: a job's checkpoint on the real API server is written at a bounded rate, resumed
// by the next invocation, guarded by resourceVersion preconditions (a second writer cannot clobber
// it) and deleted when the job completes.
func stateCheckpoint(t *testing.T, c *controlplane.Cluster) {
	ctx := context.Background()
	const cluster = "c-ckpt"
	admin := typed(t, c)
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	s := stateStore(t, userClient(t, c, functionUser, nil), cluster, clk)
	rec, err := s.Record(ctx, stateDecision("ev-ckpt", stateJob(cluster, "key-a", "v2")))
	if err != nil || len(rec.Added) != 1 {
		t.Fatalf("record: %+v %v", rec, err)
	}
	job := rec.Added[0]
	storedRV := func() string {
		t.Helper()
		cm, err := admin.CoreV1().ConfigMaps(state.Namespace).Get(ctx, state.CheckpointName(job.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm.ResourceVersion
	}
	at := func(done int64, cont string) state.Checkpoint {
		return state.Checkpoint{Phase: state.PhasePass, Resource: "secrets", Continue: cont, Counts: reencrypt.Counts{Listed: done, Rewritten: done}, Invocations: 1}
	}

	// Bounded rate: 50 Saves within the interval write once.
	first, err := s.OpenCheckpoint(ctx, job.ID, "inv-1", state.CheckpointOptions{Interval: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(50) {
		if _, err := first.Save(ctx, at(i*10, "page")); err != nil {
			t.Fatal(err)
		}
		clk.Step(50 * time.Millisecond)
	}
	rv1 := storedRV()
	clk.Step(3 * time.Second) // 5.5 s since the first write
	if wrote, err := first.Save(ctx, at(600, "page-7")); err != nil || !wrote {
		t.Fatalf("Save after the interval: wrote=%v err=%v", wrote, err)
	}
	if first.Writes() != 2 || storedRV() == rv1 {
		t.Fatalf("%d writes (resourceVersion %s -> %s), want 2: one at the start, one after the interval", first.Writes(), rv1, storedRV())
	}

	// The invocation ends at its deadline; the next one resumes where it stopped.
	if err := first.Flush(ctx, at(700, "page-8")); err != nil {
		t.Fatal(err)
	}
	var conflicts atomic.Int64
	sNext := stateStore(t, userClient(t, c, functionUser, &conflicts), cluster, clk)
	next, err := sNext.OpenCheckpoint(ctx, job.ID, "inv-2", state.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	loaded, found := next.Loaded()
	if !found || loaded.Continue != "page-8" || loaded.Counts.Rewritten != 700 || loaded.Holder != "inv-1" || loaded.Phase != state.PhasePass {
		t.Fatalf("resumed from %+v (found %v), want inv-1's page-8 with 700 rewritten", loaded, found)
	}

	// inv-1 was slow, not dead: it writes again before inv-2 does. inv-2 must not clobber it.
	if err := first.Flush(ctx, at(800, "page-9")); err != nil {
		t.Fatal(err)
	}
	err = next.Flush(ctx, at(0, "stale"))
	if !errors.Is(err, state.ErrCheckpointTaken) {
		t.Fatalf("second writer: %v, want ErrCheckpointTaken", err)
	}
	if conflicts.Load() == 0 {
		t.Fatal("the API server never answered 409: the write was not conditional on the resourceVersion")
	}
	got, _, err := s.LoadCheckpoint(ctx, job.ID)
	if err != nil || got.Continue != "page-9" || got.Holder != "inv-1" {
		t.Fatalf("stored %+v (%v), want inv-1's page-9 intact", got, err)
	}

	// A third invocation takes over for good (inv-1 is gone now); inv-1's late write is refused.
	third, err := s.OpenCheckpoint(ctx, job.ID, "inv-3", state.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conv := state.Checkpoint{Phase: state.PhaseConvergence, Resource: "secrets", Counts: reencrypt.Counts{Listed: 5, Current: 5}, Invocations: 3}
	if err := third.Flush(ctx, conv); err != nil {
		t.Fatal(err)
	}
	if err := first.Flush(ctx, at(900, "page-10")); !errors.Is(err, state.ErrCheckpointTaken) {
		t.Fatalf("late write of the old holder: %v, want ErrCheckpointTaken", err)
	}

	// Completion records the verified version, removes the job and deletes its checkpoint.
	if _, err := s.Complete(ctx, job, "v2"); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if _, found, err := s.LoadCheckpoint(ctx, job.ID); err != nil || found {
		t.Fatalf("checkpoint after completion: found=%v err=%v", found, err)
	}
	st, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Verified[policy.Target{Cluster: cluster, Key: "key-a"}] != "v2" || len(st.Pending) != 0 {
		t.Fatalf("after completion: verified %v, pending %v", st.Verified, st.Pending)
	}
	if err := third.Flush(ctx, conv); !errors.Is(err, state.ErrCheckpointTaken) {
		t.Fatalf("write after completion: %v, want ErrCheckpointTaken (the job is done)", err)
	}
}
