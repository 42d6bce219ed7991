package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/evidence"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/verify"
)

// records returns the evidence records kept in cluster, oldest first.
func (e *env) records(cluster string) []evidence.Record {
	e.t.Helper()
	stored, err := e.stores[cluster].Evidence(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []evidence.Record
	for _, s := range stored {
		var r evidence.Record
		if err := json.Unmarshal(s.Body, &r); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// evidenceLines returns the "evidence record" log lines.
func (e *env) evidenceLines() []map[string]any {
	var out []map[string]any
	for _, l := range bytes.Split(e.logs.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil && m["message"] == evidence.LogMessage {
			out = append(out, m)
		}
	}
	return out
}

// addRotationJob records the job a CreateKeyVersion event asks for on cluster.
func (e *env) addRotationJob(cluster, version string) {
	e.t.Helper()
	_, err := e.stores[cluster].Record(context.Background(), policy.Decision{
		Event: events.DedupKey{Source: "acs.kms", ID: "ev-rotate-1"},
		Jobs: []policy.Job{{Cluster: cluster, Key: keyA, Version: version, Reason: "CreateKeyVersion on key", NotBefore: e.clock.Now(),
			Trigger: &policy.Trigger{Name: "CreateKeyVersion", Actor: "RAM user ops-alice", RecordID: "trail-rotate-1", Time: eventTime}}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestEvidenceRecordPerOutcome: a done job and a suspicious one each leave one record in their
// cluster and one log line; the done record carries the trigger, the versions before and after,
// the phases, the counts, the replicas, every verifier layer and the ActionTrail event IDs.
func TestEvidenceRecordPerOutcome(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	old, _ := e.kms.DescribeKey(ctx, keyA)
	e.verify(c1, old.PrimaryKeyVersion)
	e.verify(c2, old.PrimaryKeyVersion)
	primary := e.kms.Rotate(keyA)
	e.addRotationJob(c1, primary)
	e.addRotationJob(c2, primary)

	at := e.clock.Now()
	conv := reencrypt.Summary{Total: reencrypt.Counts{Listed: 40, Current: 40}}
	detail := job.Outcome{
		Status:    job.StatusDone,
		PassTotal: &reencrypt.Counts{Listed: 40, Rewritten: 40},
		Phases: []job.PhaseTime{{Name: job.PhaseGate, StartedAt: at, EndedAt: at.Add(time.Minute)},
			{Name: "pass", StartedAt: at.Add(time.Minute), EndedAt: at.Add(2 * time.Minute)}},
		Adoption: &adoption.Evidence{Kind: adoption.Metrics, Version: primary, Direct: true, Replicas: 2, Detail: "hash moved"},
		Verify: &verify.Report{Verdict: verify.Pass, Convergence: &conv,
			Layers:     []verify.LayerResult{{Name: "convergence", Status: verify.Pass, Reasons: []string{"40 listed, none rewritten"}}},
			Replicas:   &verify.ReplicaCoverage{Expected: 2, Covered: []string{"aa", "bb"}},
			Audit:      &verify.AuditFacts{EventIDs: []string{"trail-gdk-1"}},
			Retirement: &verify.Retirement{Verdict: verify.RetireSafe, Reason: "no object under an older version"}},
	}
	e.runner.queue(c1, JobOutcome{Status: StatusDone, Reason: "verified", VerifiedVersion: primary, Detail: detail})
	e.runner.queue(c2, JobOutcome{Status: StatusSuspicious, Reason: "the pass rewrote nothing after a rotation"})
	res, err := e.offpeak().Handle(fcContext("tick"), timerPayload(t, inWindow))
	if err != nil {
		t.Fatal(err)
	}

	r1 := e.records(c1)
	if len(r1) != 1 {
		t.Fatalf("c1 records = %+v", r1)
	}
	r := r1[0]
	if r.Status != "done" || r.ToVersion != primary || !slices.Equal(r.FromVersions, []string{old.PrimaryKeyVersion}) || r.Key != keyA {
		t.Fatalf("record = %+v", r)
	}
	if r.Trigger.Kind != evidence.TriggerEvent || r.Trigger.EventID != "ev-rotate-1" || r.Trigger.RecordID != "trail-rotate-1" || r.Trigger.Actor != "RAM user ops-alice" {
		t.Fatalf("trigger = %+v", r.Trigger)
	}
	if r.Pass.Rewritten != 40 || r.Convergence == nil || r.Convergence.Current != 40 || len(r.Phases) != 2 || r.Adoption == nil || r.Adoption.Kind != "metrics" {
		t.Fatalf("record = %+v", r)
	}
	if !slices.Equal(r.TrailEventIDs, []string{"trail-rotate-1", "trail-gdk-1"}) || r.ExpectedReplicas != 2 || len(r.Replicas) != 2 {
		t.Fatalf("trail %v replicas %v/%d", r.TrailEventIDs, r.Replicas, r.ExpectedReplicas)
	}
	if r.Verdict != "PASS" || len(r.Layers) != 1 || r.Retirement.Verdict != "safe" || r.Retirement.Statement != evidence.RetirementStatement {
		t.Fatalf("verifier %s %+v retirement %+v", r.Verdict, r.Layers, r.Retirement)
	}
	if r.TimeToAdoptionSeconds <= 0 {
		t.Fatalf("time to adoption = %v (rotation %s, gate ended %s)", r.TimeToAdoptionSeconds, eventTime, at.Add(time.Minute))
	}
	if got := res.Clusters[0].Jobs[0].Evidence; got != r.ID {
		t.Fatalf("result names record %q, kept %q", got, r.ID)
	}
	r2 := e.records(c2)
	if len(r2) != 1 || r2[0].Status != "suspicious" {
		t.Fatalf("c2 records = %+v", r2)
	}
	lines := e.evidenceLines()
	if len(lines) != 2 || lines[0]["cluster"] != c1 || lines[0]["eventId"] != "trail-rotate-1" || lines[1]["status"] != "suspicious" {
		t.Fatalf("evidence lines = %v", lines)
	}
	if k, _ := lines[0]["key"].(string); k == "" || strings.Contains(k, keyA) {
		t.Fatalf("the evidence line's key is %q: want it shortened like every key rekey logs", k)
	}
}

// TestEvidenceForPartialOnlyAtTheWindowsEnd: a partial outcome in the middle of the window (the
// next tick goes on) leaves no record; one that ends the window does; busy never does; the same
// refused outcome twice is one record.
func TestEvidenceForPartialOnlyAtTheWindowsEnd(t *testing.T) {
	e := newEnv(t, map[string]string{"REKEY_TARGETS": c1 + "=" + keyA})
	ctx := context.Background()
	md, _ := e.kms.DescribeKey(ctx, keyA)
	e.addRotationJob(c1, md.PrimaryKeyVersion)

	e.runner.queue(c1, JobOutcome{Status: StatusPartial, Reason: "deadline: checkpoint saved"})
	if _, err := e.offpeak().Handle(fcContext("t1"), timerPayload(t, inWindow)); err != nil {
		t.Fatal(err)
	}
	e.runner.queue(c1, JobOutcome{Status: StatusBusy, Reason: "already running"})
	if _, err := e.offpeak().Handle(fcContext("t2"), timerPayload(t, inWindow)); err != nil {
		t.Fatal(err)
	}
	if got := e.records(c1); len(got) != 0 {
		t.Fatalf("records after a mid-window partial and a busy run: %+v", got)
	}

	// The window (01:00-05:00 Asia/Shanghai) ends at 21:00 UTC: a tick 20 s before it.
	end := time.Date(2026, 11, 28, 20, 59, 40, 0, time.UTC)
	e.clock.SetTime(end)
	e.runner.queue(c1, JobOutcome{Status: StatusPartial, Reason: "the off-peak window ends: checkpoint saved"})
	if _, err := e.offpeak().Handle(fcContext("t3"), timerPayload(t, end)); err != nil {
		t.Fatal(err)
	}
	got := e.records(c1)
	if len(got) != 1 || got[0].Status != "partial" {
		t.Fatalf("records after the window's last partial: %+v", got)
	}

	e.clock.SetTime(inWindow.Add(24 * time.Hour))
	for i := 0; i < 2; i++ {
		e.runner.queue(c1, JobOutcome{Status: StatusRefused, Reason: "the key is Disabled"})
		if _, err := e.offpeak().Handle(fcContext("r"), timerPayload(t, inWindow.Add(24*time.Hour))); err != nil {
			t.Fatal(err)
		}
		e.clock.Step(5 * time.Minute)
	}
	got = e.records(c1)
	if len(got) != 2 || got[1].Status != "refused" {
		t.Fatalf("records after the same refusal twice: %+v", got)
	}
	if n := len(e.evidenceLines()); n != 3 {
		t.Fatalf("%d evidence lines, want 3 (the repeated refusal is logged once as a record line)", n)
	}
}
