package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
)

func TestKMSLayer(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *kmsfake.Fake)
		key     string
		want    Status
		reasons []string
	}{
		{"enabled", nil, "key-1", Pass, []string{"is Enabled", "canary GenerateDataKey -> Decrypt round trip"}},
		{"rotated", func(f *kmsfake.Fake) { f.Rotate("key-1") }, "key-1", Pass, []string{"primary version key-1-v2"}},
		{"disabled", func(f *kmsfake.Fake) { f.SetState("key-1", kms.KeyStateDisabled) }, "key-1", Fail, []string{"is Disabled", "cannot encrypt or decrypt", "EnableKey"}},
		{"pending deletion", func(f *kmsfake.Fake) { f.SetState("key-1", kms.KeyStatePendingDeletion) }, "key-1", Fail, []string{"PendingDeletion", "CancelKeyDeletion"}},
		{"unknown key", nil, "nope", Fail, []string{"does not exist"}},
		{"canary broken", func(f *kmsfake.Fake) { f.SetError(kmsfake.OpDecrypt, errors.New("boom")) }, "key-1", Fail, []string{"canary Decrypt failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := kmsfake.New()
			f.CreateKey("key-1")
			if tt.setup != nil {
				tt.setup(f)
			}
			r, err := Verify(context.Background(), Inputs{KMS: f, KeyID: tt.key})
			if err != nil {
				t.Fatal(err)
			}
			l := r.Layer(LayerKMS)
			if l.Status != tt.want || r.Verdict != tt.want {
				t.Fatalf("status %s verdict %s, want %s: %v", l.Status, r.Verdict, tt.want, l.Reasons)
			}
			text := strings.Join(l.Reasons, "\n")
			for _, want := range tt.reasons {
				if !strings.Contains(text, want) {
					t.Errorf("reasons %q lack %q", text, want)
				}
			}
		})
	}
}

func TestDisabledKeySkipsCanary(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	f.SetState("key-1", kms.KeyStateDisabled)
	CheckKey(context.Background(), f, "key-1")
	if n := f.Calls(kmsfake.OpGenerateDataKey); n != 0 {
		t.Fatalf("canary ran %d times on a disabled key", n)
	}
}

type fakeTrail struct {
	events []actiontrail.Event
	query  actiontrail.Query
	err    error
}

func (f *fakeTrail) LookupEvents(_ context.Context, q actiontrail.Query) ([]actiontrail.Event, error) {
	f.query = q
	return f.events, f.err
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

func TestAuditLayer(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	v2 := f.Rotate("key-1")
	tests := []struct {
		name   string
		events []actiontrail.Event
		err    error
		want   Status
		reason string
	}{
		{"evidence", []actiontrail.Event{event("Encrypt", "AliyunCSManagedSecurityRole", v2, ""), event("Decrypt", "aliyuncsmanagedsecurityrole", "key-1-v1", "")}, nil, Pass, "Encrypt " + v2 + " x1"},
		{"no evidence", []actiontrail.Event{event("Encrypt", "", v2, ""), event("DescribeKey", "aliyuncsmanagedsecurityrole", "", "")}, nil, Fail, "no evidence"},
		{"failed calls are not evidence", []actiontrail.Event{event("Encrypt", "aliyuncsmanagedsecurityrole", v2, "Rejected.Disabled")}, nil, Fail, "no evidence"},
		{"old version only", []actiontrail.Event{event("Encrypt", "aliyuncsmanagedsecurityrole", "key-1-v1", "")}, nil, Fail, "has not picked up the rotation"},
		{"lookup fails", nil, errors.New("throttled"), Fail, "LookupEvents"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trail := &fakeTrail{events: tt.events, err: tt.err}
			r, err := Verify(context.Background(), Inputs{KMS: f, KeyID: "key-1", Trail: trail})
			if err != nil {
				t.Fatal(err)
			}
			l := r.Layer(LayerAudit)
			if l.Status != tt.want || !strings.Contains(strings.Join(l.Reasons, " "), tt.reason) {
				t.Fatalf("audit %s %v, want %s with %q", l.Status, l.Reasons, tt.want, tt.reason)
			}
			if trail.query.ResourceName != "key-1" {
				t.Fatalf("lookup filtered on %q, want the key", trail.query.ResourceName)
			}
		})
	}
}

func TestReportOutput(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	now := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	r, _ := Verify(context.Background(), Inputs{KMS: f, KeyID: "key-1", Clock: func() time.Time { return now }})
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "VERDICT: PASS (checked 2026-11-27T00:00:00Z)\n[PASS] kms\n") {
		t.Fatalf("text = %q", b.String())
	}
	j, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(j), `"verdict":"PASS"`) || !strings.Contains(string(j), `"primaryKeyVersion":"key-1-v1"`) {
		t.Fatalf("json = %s %v", j, err)
	}
	if (Report{}).Layer("nope").Status != Skip {
		t.Fatal("absent layer should be SKIP")
	}
}
