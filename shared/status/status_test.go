package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/evidence"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/retry"
	"github.com/rekey-dev/rekey/shared/state"
)

const key = "key-hzz63a1b2c3d4e5f6g7h8"

var start = time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)

// fleet is three clusters on fake clientsets: "behind" got a pending job for the new primary 3 days
// before the check, "done" verified it, "down" cannot be reached.
type fleet struct {
	clock  *clocktesting.FakeClock
	kms    *kmsfake.Fake
	stores map[string]*state.Store
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	clk := clocktesting.NewFakeClock(start)
	k := kmsfake.New()
	k.Clock = clk
	k.CreateKey(key)
	f := &fleet{clock: clk, kms: k, stores: map[string]*state.Store{}}
	for _, c := range []string{"behind", "done"} {
		s, err := state.New(fake.NewClientset(), c, state.WithClock(clk),
			state.WithRetryPolicy(retry.Policy{MaxAttempts: 1, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}))
		if err != nil {
			t.Fatal(err)
		}
		f.stores[c] = s
	}
	ctx := context.Background()
	md, _ := k.DescribeKey(ctx, key)
	old := md.PrimaryKeyVersion
	for _, c := range []string{"behind", "done"} {
		f.complete(t, c, old)
	}
	clk.Step(time.Hour)
	primary := k.Rotate(key)
	for _, c := range []string{"behind", "done"} {
		if _, err := f.stores[c].AddJobs(ctx, policy.Job{Cluster: c, Key: key, Version: primary, Reason: "CreateKeyVersion", NotBefore: clk.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Step(2 * time.Hour)
	f.complete(t, "done", primary)
	f.record(t, "done", evidence.Record{ID: "done-rotation", Cluster: "done", Key: key, Status: "done", EndedAt: clk.Now(), ToVersion: primary})
	clk.Step(3 * 24 * time.Hour)
	return f
}

func (f *fleet) complete(t *testing.T, c, version string) {
	t.Helper()
	ctx := context.Background()
	rec, err := f.stores[c].AddJobs(ctx, policy.Job{Cluster: c, Key: key, Version: version, NotBefore: f.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range append(rec.Added, rec.Existing...) {
		if _, err := f.stores[c].Complete(ctx, j, version); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fleet) record(t *testing.T, c string, r evidence.Record) {
	t.Helper()
	b, _ := json.Marshal(r)
	if err := f.stores[c].AddEvidence(context.Background(), r.ID, r.EndedAt, b, 0); err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) inputs() Inputs {
	return Inputs{
		Targets: []config.Target{{Cluster: "behind", Key: key}, {Cluster: "done", Key: key}, {Cluster: "down", Key: key}},
		KMS:     f.kms,
		Open: func(_ context.Context, c string) (*state.Store, error) {
			if s, ok := f.stores[c]; ok {
				return s, nil
			}
			return nil, errors.New("dial tcp 10.0.0.9:6443: connect: connection refused")
		},
		Clock: f.clock,
	}
}

func TestStatusShowsEachClusterAndFailsTheCheck(t *testing.T) {
	f := newFleet(t)
	rep := Collect(context.Background(), f.inputs())
	if rep.Healthy {
		t.Fatal("report healthy with a cluster 3 days behind and one unreachable")
	}
	if len(rep.Rows) != 3 {
		t.Fatalf("rows = %+v", rep.Rows)
	}
	behind, done, down := rep.Rows[0], rep.Rows[1], rep.Rows[2]
	md, _ := f.kms.DescribeKey(context.Background(), key)

	if !behind.Behind || behind.Healthy || behind.Primary != md.PrimaryKeyVersion || behind.Verified == md.PrimaryKeyVersion {
		t.Fatalf("behind row = %+v", behind)
	}
	if got := time.Duration(behind.BehindSeconds) * time.Second; got < 3*24*time.Hour || got > 3*24*time.Hour+3*time.Hour {
		t.Fatalf("behind for %s, want about 3 days", got)
	}
	if len(behind.Pending) != 1 || !strings.Contains(strings.Join(behind.Problems, "\n"), "for 3d") {
		t.Fatalf("behind row pending %+v problems %q", behind.Pending, behind.Problems)
	}

	if done.Behind || !done.Healthy || done.Verified != md.PrimaryKeyVersion || done.LastOutcome == nil || done.LastOutcome.Status != "done" {
		t.Fatalf("done row = %+v", done)
	}

	if !down.Unreachable || down.Healthy || !strings.Contains(down.Error, "connection refused") {
		t.Fatalf("down row = %+v", down)
	}

	var table bytes.Buffer
	if err := WriteTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	out := table.String()
	for _, want := range []string{"CLUSTER", "behind", "3d", "done ", "<unreachable>", "connection refused", "NO", "yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	// JSON has the same facts.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Healthy || len(back.Rows) != 3 || back.Rows[0].BehindSeconds != behind.BehindSeconds || !back.Rows[2].Unreachable ||
		back.Rows[1].LastOutcome.Record != "done-rotation" {
		t.Fatalf("json = %s", b)
	}
}

func TestStatusWithinMaxBehindAndAFailedOutcome(t *testing.T) {
	f := newFleet(t)
	in := f.inputs()
	in.Targets = in.Targets[:2]
	in.MaxBehind = 7 * 24 * time.Hour
	rep := Collect(context.Background(), in)
	if !rep.Healthy {
		t.Fatalf("3 days behind with --max-behind 7d: %+v", rep.Rows)
	}
	f.record(t, "done", evidence.Record{ID: "later", Cluster: "done", Key: key, Status: "suspicious", Reason: "rewrote nothing", EndedAt: f.clock.Now()})
	rep = Collect(context.Background(), in)
	if rep.Healthy || rep.Rows[1].Healthy || !strings.Contains(rep.Rows[1].Problems[0], "suspicious") {
		t.Fatalf("a suspicious last outcome: %+v", rep.Rows[1])
	}
}

func TestStatusFlagsADisabledKey(t *testing.T) {
	f := newFleet(t)
	f.kms.SetState(key, "Disabled")
	in := f.inputs()
	in.Targets = in.Targets[1:2]
	rep := Collect(context.Background(), in)
	if rep.Healthy || !strings.Contains(strings.Join(rep.Rows[0].Problems, ";"), "Disabled") {
		t.Fatalf("disabled key: %+v", rep.Rows[0])
	}
}
