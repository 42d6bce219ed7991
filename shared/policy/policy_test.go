package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/keyref"
)

const (
	acct   = "5068000000000001"
	region = "cn-hangzhou"
	keyA   = "key-hzz63a1b2c3d4e5f6g7h8" // the key of the fixtures
	keyO   = "key-other0000000000000001"
	clA    = "c0123456789abcdef0123456789abcdef"
)

var t0 = time.Date(2026, 11, 28, 9, 21, 32, 0, time.UTC)

func cfg(t *testing.T, targets string) config.Config {
	t.Helper()
	c, err := config.Load(func(k string) string {
		if k == config.EnvTargets {
			return targets
		}
		return ""
	}, config.Own{Region: region, AccountID: acct})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fixture decodes a file of shared/events/testdata (the same bytes the decoder is tested on).
func fixture(t *testing.T, name string) events.CloudEvent {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "events", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := events.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p.Events[0]
}

// kms builds an acs.kms ApiCall event for name on keyID; mods adjust it.
func kms(name, keyID string, mods ...func(*events.CloudEvent)) events.CloudEvent {
	ev := events.CloudEvent{
		ID: "ev-" + name + "-" + keyID, Source: events.SourceKMS, SpecVersion: "1.0", Type: "kms:ActionTrail:ApiCall",
		Time: t0.Format(time.RFC3339), AliyunAccountID: acct, AliyunRegionID: region,
		Record: &actiontrail.Event{
			EventID: "rec-" + name, EventName: name, EventType: "ApiCall", EventTime: t0.Format(time.RFC3339), AcsRegion: region,
			RequestParameters: map[string]any{"KeyId": keyID},
			SourceIPAddress:   "192.0.2.10",
			UserIdentity:      actiontrail.Identity{Type: "ram-user", AccountID: acct, PrincipalID: "204", UserName: "alice"},
		},
	}
	for _, m := range mods {
		m(&ev)
	}
	return ev
}

func cs(params map[string]any, mods ...func(*events.CloudEvent)) events.CloudEvent {
	ev := kms(events.CSUpdateKMSEncryption, "")
	ev.Source, ev.Type, ev.ID = events.SourceCS, "cs:ActionTrail:ApiCall", "ev-cs"
	ev.Record.RequestParameters = params
	for _, m := range mods {
		m(&ev)
	}
	return ev
}

func withVersion(v string) func(*events.CloudEvent) {
	return func(ev *events.CloudEvent) {
		ev.Record.ResponseElements = map[string]any{"KeyVersion": map[string]any{"KeyVersionId": v}}
	}
}

type want struct {
	kind     Kind
	reason   string   // substring
	jobs     []string // "cluster@version"
	notAfter time.Time
	severity Severity
	clusters []string
	actor    string
}

func TestDecide(t *testing.T) {
	shared := "c1=" + keyA + ",c2=" + keyA + ",c3=alias/other"
	aliases := map[string]string{"alias/main": keyA, "alias/other": keyO}
	st := State{Aliases: aliases}
	for _, tc := range []struct {
		name    string
		targets string
		settle  *time.Duration
		ev      events.CloudEvent
		st      State
		want    want
	}{
		// CreateKeyVersion -> a job per cluster using the key.
		{name: "create key version by ID", targets: shared, ev: kms("CreateKeyVersion", keyA, withVersion("v2")), st: st,
			want: want{kind: Rotate, reason: "2 job(s)", jobs: []string{"c1@v2", "c2@v2"}, notAfter: t0.Add(2 * time.Minute)}},
		{name: "create key version by alias", targets: shared, ev: kms("CreateKeyVersion", "alias/main", withVersion("v2")), st: st,
			want: want{kind: Rotate, jobs: []string{"c1@v2", "c2@v2"}}},
		{name: "create key version by ARN", targets: shared, ev: kms("CreateKeyVersion", "acs:kms:cn-hangzhou:"+acct+":key/"+keyA), st: st,
			want: want{kind: Rotate, reason: "(primary at run time)", jobs: []string{"c1@", "c2@"}}},
		{name: "create key version by alias ARN", targets: shared, ev: kms("CreateKeyVersion", "acs:kms:cn-hangzhou:"+acct+":alias/main"), st: st,
			want: want{kind: Rotate, jobs: []string{"c1@", "c2@"}}},
		{name: "create key version on a key configured by alias", targets: shared, ev: kms("CreateKeyVersion", keyO), st: st,
			want: want{kind: Rotate, jobs: []string{"c3@"}}},
		{name: "create key version fixture", targets: "cx=" + keyA, ev: fixture(t, "kms-createkeyversion.json"),
			want: want{kind: Rotate, jobs: []string{"cx@v2-5c1f"}, notAfter: t0.Add(2 * time.Minute)}},
		{name: "create key version as AliyunServiceEvent", targets: "cx=" + keyA, ev: fixture(t, "kms-serviceevent.json"),
			want: want{kind: Rotate, jobs: []string{"cx@"}, notAfter: time.Date(2026, 12, 1, 0, 2, 5, 0, time.UTC)}},
		{name: "create key version as ConsoleOperation", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) { ev.Type = "kms:ActionTrail:ConsoleOperation" }), st: st,
			want: want{kind: Rotate, jobs: []string{"c1@", "c2@"}}},
		{name: "settle 0 runs at event time", targets: shared, settle: ptr(time.Duration(0)), ev: kms("CreateKeyVersion", keyA), st: st,
			want: want{kind: Rotate, jobs: []string{"c1@", "c2@"}, notAfter: t0}},
		{name: "time falls back to the envelope", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) {
			ev.Record.EventTime = ""
			ev.Time = t0.Add(time.Hour).Format(time.RFC3339)
		}), st: st, want: want{kind: Rotate, jobs: []string{"c1@", "c2@"}, notAfter: t0.Add(time.Hour + 2*time.Minute)}},
		{name: "time falls back to aliyunpublishtime", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) {
			ev.Record.EventTime, ev.Time, ev.AliyunPublishTime = "", "", "2026-11-28T17:21:32.000PRC"
		}), st: st, want: want{kind: Rotate, jobs: []string{"c1@", "c2@"}, notAfter: t0.Add(2 * time.Minute)}},
		{name: "no time at all", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) {
			ev.Record.EventTime, ev.Time, ev.AliyunPublishTime = "", "", "garbage"
		}), st: st, want: want{kind: Ignore, reason: "no parseable time"}},
		{name: "version verified on one cluster", targets: shared, ev: kms("CreateKeyVersion", keyA, withVersion("v2")),
			st:   State{Verified: map[Target]string{{Cluster: "c1", Key: keyA}: "v2"}},
			want: want{kind: Rotate, reason: "skipped c1: version v2 already re-encrypted and verified", jobs: []string{"c2@v2"}}},
		{name: "version verified everywhere", targets: shared, ev: kms("CreateKeyVersion", keyA, withVersion("v2")),
			st:   State{Verified: map[Target]string{{Cluster: "c1", Key: keyA}: "v2", {Cluster: "c2", Key: keyA}: "v2"}},
			want: want{kind: Ignore, reason: "already handled on every cluster"}},
		{name: "older version verified does not count", targets: shared, ev: kms("CreateKeyVersion", keyA, withVersion("v3")),
			st:   State{Verified: map[Target]string{{Cluster: "c1", Key: keyA}: "v2", {Cluster: "c2", Key: keyA}: "v2"}},
			want: want{kind: Rotate, jobs: []string{"c1@v3", "c2@v3"}}},
		{name: "job already pending", targets: shared, ev: kms("CreateKeyVersion", keyA, withVersion("v3")),
			st:   State{Pending: []Job{{Cluster: "c1", Key: keyA}, {Cluster: "c2", Key: keyA, Version: "v2"}}},
			want: want{kind: Rotate, reason: "c1: a job for version (primary at run time) is already pending", jobs: []string{"c2@v3"}}},
		{name: "same version pending everywhere", targets: shared, ev: kms("CreateKeyVersion", keyA, withVersion("v3")),
			st:   State{Pending: []Job{{Cluster: "c1", Key: keyA, Version: "v3"}, {Cluster: "c2", Key: keyA, Version: "v3"}}},
			want: want{kind: Ignore, reason: "already handled"}},

		// cs UpdateKMSEncryption -> a full job.
		{name: "cs update kms encryption fixture", targets: clA + "=" + keyA, ev: fixture(t, "cs-updatekmsencryption.json"),
			want: want{kind: Rotate, reason: "a full job", jobs: []string{clA + "@"}, notAfter: time.Date(2026, 11, 28, 13, 2, 0, 0, time.UTC)}},
		{name: "cs update kms encryption path form", targets: clA + "=" + keyA, ev: fixture(t, "cs-updatekmsencryption-path.json"),
			want: want{kind: Rotate, jobs: []string{clA + "@"}}},
		{name: "cs enabled with the key by alias", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1", "kms_key_id": "alias/main"}), st: st,
			want: want{kind: Rotate, jobs: []string{"c1@"}}},
		{name: "cs turned encryption off", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1", "disable_encryption": true}),
			want: want{kind: Alert, severity: Warning, clusters: []string{"c1"}, reason: "turned Secret encryption off"}},
		{name: "cs switched to another key", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1", "kms_key_id": keyO}),
			want: want{kind: Alert, severity: Warning, reason: "REKEY_TARGETS says " + keyA}},
		{name: "cs job already pending", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1"}), st: State{Pending: []Job{{Cluster: "c1", Key: keyA}}},
			want: want{kind: Ignore, reason: "already pending"}},
		{name: "cs unwatched cluster", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c9"}),
			want: want{kind: Ignore, reason: "cluster c9 is not watched"}},
		{name: "cs without cluster id", targets: "c1=" + keyA, ev: cs(map[string]any{"x": "y"}),
			want: want{kind: Ignore, reason: "no cluster ID"}},
		{name: "cs other api", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1"}, func(ev *events.CloudEvent) { ev.Record.EventName = "DeleteCluster" }),
			want: want{kind: Ignore, reason: "CS DeleteCluster does not concern rotation"}},
		{name: "cs failed call", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1"}, func(ev *events.CloudEvent) { ev.Record.ErrorCode = "ErrorClusterNotFound" }),
			want: want{kind: Ignore, reason: "errorCode ErrorClusterNotFound"}},

		// Dangers -> critical alert, never a run.
		{name: "disable key", targets: shared, ev: kms("DisableKey", keyA), st: st,
			want: want{kind: Alert, severity: Critical, clusters: []string{"c1", "c2"}, actor: "ram-user alice of account " + acct, reason: "alert, no run"}},
		{name: "disable key by alias in the console", targets: shared, ev: fixture(t, "kms-disablekey-console-alias.json"), st: State{Aliases: map[string]string{"alias/rekey-main": keyA}},
			want: want{kind: Alert, severity: Critical, clusters: []string{"c1", "c2"}, actor: "assumed-role role ops-admin (3000000000000003:ops-session) of account " + acct}},
		{name: "schedule key deletion by ARN", targets: shared, ev: fixture(t, "kms-schedulekeydeletion-arn.json"), st: st,
			want: want{kind: Alert, severity: Critical, clusters: []string{"c1", "c2"}, actor: "root-account root of account " + acct}},
		{name: "delete key material", targets: shared, ev: kms("DeleteKeyMaterial", keyA), st: st,
			want: want{kind: Alert, severity: Critical, clusters: []string{"c1", "c2"}}},
		{name: "disable a key shared with an alias-configured cluster", targets: shared, ev: kms("DisableKey", keyO), st: st,
			want: want{kind: Alert, severity: Critical, clusters: []string{"c3"}}},

		// Recoveries and notes.
		{name: "enable key", targets: shared, ev: kms("EnableKey", keyA), st: st,
			want: want{kind: Recover, severity: Info, clusters: []string{"c1", "c2"}}},
		{name: "cancel key deletion", targets: shared, ev: kms("CancelKeyDeletion", keyA), st: st,
			want: want{kind: Recover, severity: Info, clusters: []string{"c1", "c2"}}},
		{name: "update rotation policy", targets: shared, ev: kms("UpdateRotationPolicy", keyA, func(ev *events.CloudEvent) {
			ev.Record.RequestParameters["EnableAutomaticRotation"] = "true"
			ev.Record.RequestParameters["RotationInterval"] = "2592000s"
		}), st: st, want: want{kind: Note, reason: "EnableAutomaticRotation=true, RotationInterval=2592000s"}},

		// Ignored, with the reason.
		{name: "another account", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) { ev.AliyunAccountID = "999" }), st: st,
			want: want{kind: Ignore, reason: "event of account 999, not REKEY_ACCOUNT_ID " + acct}},
		{name: "another account from userIdentity", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) {
			ev.AliyunAccountID, ev.Record.UserIdentity.AccountID = "", "999"
		}), st: st, want: want{kind: Ignore, reason: "event of account 999"}},
		{name: "no account", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) {
			ev.AliyunAccountID, ev.Record.UserIdentity.AccountID = "", ""
		}), st: st, want: want{kind: Ignore, reason: "names no account"}},
		{name: "another region", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) { ev.AliyunRegionID = "cn-beijing" }), st: st,
			want: want{kind: Ignore, reason: "event of region cn-beijing, not REKEY_REGION cn-hangzhou"}},
		{name: "another region from acsRegion", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) {
			ev.AliyunRegionID, ev.Record.AcsRegion = "", "cn-beijing"
		}), st: st, want: want{kind: Ignore, reason: "event of region cn-beijing"}},
		{name: "no region", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) {
			ev.AliyunRegionID, ev.Record.AcsRegion = "", ""
		}), st: st, want: want{kind: Ignore, reason: "names no region"}},
		{name: "unwatched key", targets: shared, ev: kms("CreateKeyVersion", "key-unwatched"), st: st,
			want: want{kind: Ignore, reason: "key key-unwatched is not watched"}},
		{name: "unresolved alias", targets: shared, ev: kms("DisableKey", "alias/unknown"), st: st,
			want: want{kind: Ignore, reason: "key alias/unknown is not watched"}},
		{name: "failed call (fixture)", targets: shared, ev: fixture(t, "kms-failed.json"), st: st,
			want: want{kind: Ignore, reason: "DisableKey failed (errorCode Forbidden.RAM)"}},
		{name: "KeyId ARN of another account", targets: shared, ev: kms("DisableKey", "acs:kms:cn-hangzhou:999:key/"+keyA), st: st,
			want: want{kind: Ignore, reason: "ARN of account 999"}},
		{name: "KeyId ARN of another region", targets: shared, ev: kms("DisableKey", "acs:kms:cn-beijing:"+acct+":key/"+keyA), st: st,
			want: want{kind: Ignore, reason: "ARN of region cn-beijing"}},
		{name: "KeyId missing", targets: shared, ev: kms("DisableKey", ""), st: st,
			want: want{kind: Ignore, reason: "no requestParameters.KeyId"}},
		{name: "KeyId malformed", targets: shared, ev: kms("DisableKey", "key with spaces"), st: st,
			want: want{kind: Ignore, reason: "KeyId: key ID"}},
		{name: "KMS read call (doc sample)", targets: "c1=3a6a031d-7b2c-4c1e-9e1a-0123456789ab", ev: fixture(t, "kms-describekey-doc.json"),
			want: want{kind: Ignore, reason: "KMS DescribeKey does not concern rotation"}},
		{name: "unknown KMS type", targets: shared, ev: fixture(t, "eventbridge-unknown-type.json"), st: st,
			want: want{kind: Ignore, reason: `type "kms:Config:ConfigurationItemChangeNotification" is not an ActionTrail type of source acs.kms`}},
		{name: "unknown source", targets: shared, ev: fixture(t, "eventbridge-envelope-doc.json"), st: st,
			want: want{kind: Ignore, reason: `source "acs.oss"`}},
		{name: "kms source with a cs type", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) { ev.Type = "cs:ActionTrail:ApiCall" }), st: st,
			want: want{kind: Ignore, reason: "not an ActionTrail type of source acs.kms"}},
		{name: "cs source with a kms type", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1"}, func(ev *events.CloudEvent) { ev.Type = "kms:ActionTrail:ApiCall" }),
			want: want{kind: Ignore, reason: "not an ActionTrail type of source acs.cs"}},
		{name: "cs console operation", targets: "c1=" + keyA, ev: cs(map[string]any{"ClusterId": "c1"}, func(ev *events.CloudEvent) { ev.Type = "cs:ActionTrail:ConsoleOperation" }),
			want: want{kind: Ignore, reason: "not an ActionTrail type of source acs.cs"}},
		{name: "kms type without a record", targets: shared, ev: kms("CreateKeyVersion", keyA, func(ev *events.CloudEvent) { ev.Record = nil }), st: st,
			want: want{kind: Ignore, reason: "no ActionTrail record"}},
		{name: "event already handled", targets: shared, ev: kms("CreateKeyVersion", keyA),
			st:   State{Handled: map[events.DedupKey]bool{{Source: events.SourceKMS, ID: "ev-CreateKeyVersion-" + keyA}: true}},
			want: want{kind: Ignore, reason: "already handled"}},
		{name: "same id from another source is not handled", targets: shared, ev: kms("CreateKeyVersion", keyA),
			st:   State{Handled: map[events.DedupKey]bool{{Source: events.SourceCS, ID: "ev-CreateKeyVersion-" + keyA}: true}},
			want: want{kind: Rotate, jobs: []string{"c1@", "c2@"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg(t, tc.targets)
			if tc.settle != nil {
				c.Settle = *tc.settle
			}
			d := Decide(tc.ev, c, tc.st)
			checkInvariants(t, d)
			if d.Kind != tc.want.kind || !strings.Contains(d.Reason, tc.want.reason) {
				t.Fatalf("decision %s: %q\nwant %s containing %q", d.Kind, d.Reason, tc.want.kind, tc.want.reason)
			}
			if d.Event != tc.ev.DedupKey() {
				t.Fatalf("event = %v", d.Event)
			}
			if tc.want.kind == Rotate {
				var got []string
				for _, j := range d.Jobs {
					got = append(got, j.Cluster+"@"+j.Version)
					if j.Reason == "" || j.Key == "" {
						t.Fatalf("job without reason or key: %+v", j)
					}
					if !tc.want.notAfter.IsZero() && !j.NotBefore.Equal(tc.want.notAfter) {
						t.Fatalf("notBefore = %v, want %v", j.NotBefore, tc.want.notAfter)
					}
				}
				if !reflect.DeepEqual(got, tc.want.jobs) {
					t.Fatalf("jobs = %v, want %v", got, tc.want.jobs)
				}
			}
			if tc.want.severity != "" {
				n := d.Notice
				if n.Severity != tc.want.severity {
					t.Fatalf("severity = %s, want %s", n.Severity, tc.want.severity)
				}
				if tc.want.clusters != nil && !reflect.DeepEqual(n.Clusters, tc.want.clusters) {
					t.Fatalf("clusters = %v, want %v", n.Clusters, tc.want.clusters)
				}
				if tc.want.actor != "" && n.Actor != tc.want.actor {
					t.Fatalf("actor = %q, want %q", n.Actor, tc.want.actor)
				}
			}
		})
	}
}

func checkInvariants(t *testing.T, d Decision) {
	t.Helper()
	if d.Reason == "" {
		t.Fatal("decision without a reason")
	}
	if (d.Kind == Rotate) != (len(d.Jobs) > 0) {
		t.Fatalf("%s decision with %d jobs", d.Kind, len(d.Jobs))
	}
	if (d.Kind == Alert || d.Kind == Recover) != (d.Notice != nil) {
		t.Fatalf("%s decision with notice %v", d.Kind, d.Notice)
	}
	if n := d.Notice; n != nil {
		if n.Title == "" || n.Impact == "" || n.Actor == "" || n.Action == "" || n.Event.ID == "" || n.Account == "" || n.Region == "" || n.Key == "" || len(n.Clusters) == 0 {
			t.Fatalf("incomplete notice: %+v", *n)
		}
	}
	if _, err := json.Marshal(d); err != nil {
		t.Fatalf("decision does not encode: %v", err)
	}
}

// TestCriticalAlertContent checks the fields an operator needs in a DisableKey alert.
func TestCriticalAlertContent(t *testing.T) {
	c := cfg(t, "c1="+keyA+",c2="+keyA)
	d := Decide(kms("ScheduleKeyDeletion", keyA), c, State{})
	n := d.Notice
	if n == nil {
		t.Fatalf("no notice: %+v", d)
	}
	for _, want := range []string{"CancelKeyDeletion", "cannot decrypt Secrets", "lost"} {
		if !strings.Contains(n.Impact, want) {
			t.Errorf("impact lacks %q: %s", want, n.Impact)
		}
	}
	if n.Key != keyA || n.RecordID != "rec-ScheduleKeyDeletion" || n.SourceIP != "192.0.2.10" || !n.Time.Equal(t0) ||
		n.Event.Source != events.SourceKMS || n.Account != acct || n.Region != region || !strings.Contains(n.Title, "CRITICAL") {
		t.Errorf("notice = %+v", *n)
	}
	for name, want := range map[string]string{"DisableKey": "EnableKey", "DeleteKeyMaterial": "ImportKeyMaterial"} {
		if n := Decide(kms(name, keyA), c, State{}).Notice; n == nil || !strings.Contains(n.Impact, want) {
			t.Errorf("%s impact lacks %q: %+v", name, want, n)
		}
	}
}

// TestEveryKindCovered keeps the table honest: each kind of decision appears in TestDecide's rows.
func TestEveryKindCovered(t *testing.T) {
	c := cfg(t, "c1="+keyA)
	got := map[Kind]bool{}
	for _, name := range []string{"CreateKeyVersion", "DisableKey", "EnableKey", "UpdateRotationPolicy", "DescribeKey"} {
		got[Decide(kms(name, keyA), c, State{}).Kind] = true
	}
	for _, k := range []Kind{Rotate, Alert, Recover, Note, Ignore} {
		if !got[k] {
			t.Errorf("no event gives %s", k)
		}
	}
}

func TestTargetRefIsUsed(t *testing.T) {
	// A target built by hand without Ref must not match everything.
	c := config.Config{AccountID: acct, Region: region, Targets: []config.Target{{Cluster: "c1", Key: keyA, Ref: keyref.Ref{ID: keyA}}}}
	if d := Decide(kms("CreateKeyVersion", keyO), c, State{}); d.Kind != Ignore {
		t.Fatalf("decision = %+v", d)
	}
}

func ptr[T any](v T) *T { return &v }
