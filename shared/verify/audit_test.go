package verify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
)

type fakeTrail struct {
	result actiontrail.Result
	query  actiontrail.Query
	err    error
}

func (f *fakeTrail) LookupEvents(_ context.Context, q actiontrail.Query) (actiontrail.Result, error) {
	f.query = q
	return f.result, f.err
}

func event(name, role, version, errorCode string) actiontrail.Event {
	e := actiontrail.Event{EventName: name, ErrorCode: errorCode, ResponseElements: map[string]any{"KeyVersionId": version},
		UserIdentity: actiontrail.Identity{Type: "assumed-role", Session: &actiontrail.SessionContext{}}}
	e.UserIdentity.Session.SessionIssuer.UserName = role
	if role == "" {
		e.UserIdentity = actiontrail.Identity{Type: "ram-user", UserName: "alice"}
	}
	return e
}

func userEvent(name, user, version string) actiontrail.Event {
	return actiontrail.Event{EventName: name, ResponseElements: map[string]any{"KeyVersionId": version},
		UserIdentity: actiontrail.Identity{Type: "ram-user", UserName: user}}
}

var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func rotatedKey(t *testing.T, rotatedAt time.Time) (*kmsfake.Fake, string) {
	t.Helper()
	f := kmsfake.New()
	f.Clock = clocktesting.NewFakePassiveClock(rotatedAt.Add(-time.Hour))
	f.CreateKey("key-1")
	f.Clock = clocktesting.NewFakePassiveClock(rotatedAt)
	return f, f.Rotate("key-1")
}

func TestAuditLayer(t *testing.T) {
	f, v2 := rotatedKey(t, testNow.Add(-2*time.Hour))
	events := func(es ...actiontrail.Event) actiontrail.Result { return actiontrail.Result{Events: es, Pages: 1} }
	tests := []struct {
		name    string
		result  actiontrail.Result
		err     error
		user    string
		want    Status
		verdict Status
		reasons []string
	}{
		{name: "evidence", result: events(event("Encrypt", "AliyunCSManagedSecurityRole", v2, ""), event("Decrypt", "aliyuncsmanagedsecurityrole", "key-1-v1", "")),
			want: Pass, verdict: Fail, reasons: []string{"role aliyuncsmanagedsecurityrole used key key-1", "Encrypt " + v2 + " x1"}},
		{name: "GenerateDataKey under the primary is evidence", result: events(event("GenerateDataKey", "aliyuncsmanagedsecurityrole", v2, "")),
			want: Pass, verdict: Fail, reasons: []string{"GenerateDataKey " + v2 + " x1"}},
		{name: "no event in the window is a warning", result: events(event("Encrypt", "", v2, ""), event("DescribeKey", "aliyuncsmanagedsecurityrole", "", "")),
			want: Warn, verdict: Fail, reasons: []string{"no event in the window", "1 other callers", "a few minutes", "read events", "not a failure on its own"}},
		{name: "failed calls are not evidence", result: events(event("Encrypt", "aliyuncsmanagedsecurityrole", v2, "Rejected.Disabled")),
			want: Warn, verdict: Fail, reasons: []string{"no event in the window"}},
		{name: "old version only", result: events(event("Decrypt", "aliyuncsmanagedsecurityrole", "key-1-v1", "")),
			want: Warn, verdict: Fail, reasons: []string{"wrapped nothing under the primary version " + v2, "Decrypt key-1-v1 x1"}},
		{name: "lookup fails", err: errors.New("invalid parameter"),
			want: Fail, verdict: Fail, reasons: []string{"LookupEvents: invalid parameter", "actiontrail:LookupEvents"}},
		{name: "lookup throttled: could not check", err: alicloud.NewAPIError(400, "Throttling.User", "Request was denied due to user flow control."),
			want: Unknown, verdict: Unknown, reasons: []string{"could not check: ActionTrail LookupEvents", "Throttling.User"}},
		{name: "RAM user", user: "k8s-kms", result: events(userEvent("Encrypt", "K8S-KMS", v2), event("Encrypt", "aliyuncsmanagedsecurityrole", v2, "")),
			want: Pass, verdict: Fail, reasons: []string{"RAM user k8s-kms used key key-1", "Encrypt " + v2 + " x1"}},
		{name: "RAM user expected, role calls do not count", user: "k8s-kms", result: events(event("Encrypt", "aliyuncsmanagedsecurityrole", v2, "")),
			want: Warn, verdict: Fail, reasons: []string{"by RAM user k8s-kms", "1 other callers"}},
		{name: "truncated", result: actiontrail.Result{Events: []actiontrail.Event{event("Encrypt", "aliyuncsmanagedsecurityrole", v2, "")}, Pages: 40, Truncated: true},
			want: Pass, verdict: Fail, reasons: []string{"truncated after 1 events (40 pages)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trail := &fakeTrail{result: tt.result, err: tt.err}
			r, err := Verify(context.Background(), Inputs{KMS: f, KeyID: "key-1", Trail: trail, AuditUser: tt.user, Clock: clocktesting.NewFakePassiveClock(testNow)})
			if err != nil {
				t.Fatal(err)
			}
			l := r.Layer(LayerAudit)
			text := strings.Join(l.Reasons, "\n")
			if l.Status != tt.want || r.Verdict != tt.verdict {
				t.Fatalf("audit %s verdict %s, want %s and %s:\n%s", l.Status, r.Verdict, tt.want, tt.verdict, text)
			}
			for _, want := range tt.reasons {
				if !strings.Contains(text, want) {
					t.Errorf("reasons lack %q:\n%s", want, text)
				}
			}
			if trail.query.ResourceName != "key-1" {
				t.Fatalf("lookup filtered on %q, want the key", trail.query.ResourceName)
			}
			if !trail.query.Start.Equal(testNow.Add(-2*time.Hour)) || !trail.query.End.Equal(testNow) {
				t.Fatalf("window %s..%s, want the last rotation to now", trail.query.Start, trail.query.End)
			}
			if r.Audit == nil || r.Audit.Clamped {
				t.Fatalf("audit facts %+v", r.Audit)
			}
		})
	}
}

func TestAuditWindowClampedTo90Days(t *testing.T) {
	f, v2 := rotatedKey(t, testNow.Add(-200*24*time.Hour))
	trail := &fakeTrail{result: actiontrail.Result{Events: []actiontrail.Event{event("Encrypt", "aliyuncsmanagedsecurityrole", v2, "")}, Pages: 1}}
	r, err := Verify(context.Background(), Inputs{KMS: f, KeyID: "key-1", Trail: trail, Clock: clocktesting.NewFakePassiveClock(testNow)})
	if err != nil {
		t.Fatal(err)
	}
	oldest := testNow.Add(-actiontrail.LookupWindow)
	if !trail.query.Start.Equal(oldest) {
		t.Fatalf("lookup started at %s, want %s (90 days back)", trail.query.Start, oldest)
	}
	l := r.Layer(LayerAudit)
	text := strings.Join(l.Reasons, "\n")
	if l.Status != Pass || r.Verdict != Fail || !strings.Contains(text, "window clamped") || !strings.Contains(text, "2026-08-29T12:00:00Z") {
		t.Fatalf("audit %s verdict %s:\n%s", l.Status, r.Verdict, text)
	}
	if r.Audit == nil || !r.Audit.Clamped || !r.Audit.Since.Equal(oldest) {
		t.Fatalf("audit facts %+v, want clamped to %s", r.Audit, oldest)
	}
}

func TestAuditAloneDescribesTheKeyWithoutCanary(t *testing.T) {
	f, v2 := rotatedKey(t, testNow.Add(-time.Hour))
	trail := &fakeTrail{result: actiontrail.Result{Events: []actiontrail.Event{event("Encrypt", "aliyuncsmanagedsecurityrole", v2, "")}}}
	r, err := Verify(context.Background(), Inputs{Layers: []string{LayerAudit}, KMS: f, KeyID: "key-1", Trail: trail, Clock: clocktesting.NewFakePassiveClock(testNow)})
	if err != nil {
		t.Fatal(err)
	}
	// The audit layer passes, but audit alone is no evidence: the verdict is FAIL.
	if r.Layer(LayerAudit).Status != Pass || r.Verdict != Fail || r.Layer(LayerKMS).Status != Skip || r.Key == nil || r.Key.PrimaryKeyVersion != v2 {
		t.Fatalf("verdict %s, kms %s, key %+v", r.Verdict, r.Layer(LayerKMS).Status, r.Key)
	}
	if n := f.Calls(kmsfake.OpGenerateDataKey); n != 0 {
		t.Fatalf("the audit layer ran the kms canary (%d GenerateDataKey)", n)
	}
	f.SetError(kmsfake.OpDescribeKey, errors.New("boom"))
	r, _ = Verify(context.Background(), Inputs{Layers: []string{LayerAudit}, KMS: f, KeyID: "key-1", Trail: trail})
	if l := r.Layer(LayerAudit); l.Status != Fail || !strings.Contains(strings.Join(l.Reasons, " "), "cannot describe key key-1") {
		t.Fatalf("audit %s %v, want FAIL describing the key", l.Status, l.Reasons)
	}
}
