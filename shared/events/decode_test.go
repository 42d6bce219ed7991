package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/actiontrail"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixtures decodes every fixture and checks what each must yield.
func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		file       string
		timer      *Timer
		events     int
		duplicates int
		// first event
		typ, eventName, keyID, eventType, actor string
		noRecord                                bool
	}{
		{file: "kms-createkeyversion.json", events: 1, typ: "kms:ActionTrail:ApiCall", eventName: KMSCreateKeyVersion, keyID: "key-hzz63a1b2c3d4e5f6g7h8", eventType: "ApiCall", actor: "alice"},
		{file: "kms-describekey-doc.json", events: 1, typ: "kms:ActionTrail:ApiCall", eventName: "DescribeKey", keyID: "3a6a031d-7b2c-4c1e-9e1a-0123456789ab", eventType: "ApiCall", actor: "root"},
		{file: "kms-disablekey-console-alias.json", events: 1, typ: "kms:ActionTrail:ConsoleOperation", eventName: KMSDisableKey, keyID: "alias/rekey-main", eventType: "ConsoleOperation", actor: "ops-admin:ops-session"},
		{file: "kms-schedulekeydeletion-arn.json", events: 1, typ: "kms:ActionTrail:ApiCall", eventName: KMSScheduleKeyDeletion, keyID: "acs:kms:cn-hangzhou:5068000000000001:key/key-hzz63a1b2c3d4e5f6g7h8", eventType: "ApiCall", actor: "root"},
		{file: "kms-serviceevent.json", events: 1, typ: "kms:ActionTrail:AliyunServiceEvent", eventName: KMSCreateKeyVersion, keyID: "key-hzz63a1b2c3d4e5f6g7h8", eventType: "AliyunServiceEvent", actor: "kms.aliyuncs.com"},
		{file: "kms-failed.json", events: 1, typ: "kms:ActionTrail:ApiCall", eventName: KMSDisableKey, keyID: "key-hzz63a1b2c3d4e5f6g7h8", eventType: "ApiCall", actor: "mallory"},
		{file: "kms-batch-array.json", events: 2, duplicates: 1, typ: "kms:ActionTrail:ApiCall", eventName: KMSEnableKey, keyID: "key-hzz63a1b2c3d4e5f6g7h8", eventType: "ApiCall"},
		{file: "kms-batch-strings.json", events: 2, typ: "kms:ActionTrail:ApiCall", eventName: KMSEnableKey, keyID: "key-hzz63a1b2c3d4e5f6g7h8", eventType: "ApiCall"},
		{file: "cs-updatekmsencryption.json", events: 1, typ: "cs:ActionTrail:ApiCall", eventName: CSUpdateKMSEncryption, eventType: "ApiCall", actor: "alice"},
		{file: "cs-updatekmsencryption-path.json", events: 1, typ: "cs:ActionTrail:ApiCall", eventName: CSUpdateKMSEncryption, eventType: "ApiCall", actor: "root"},
		{file: "eventbridge-envelope-doc.json", events: 1, typ: "oss:ObjectCreated:PostObject", noRecord: true},
		{file: "eventbridge-unknown-type.json", events: 1, typ: "kms:Config:ConfigurationItemChangeNotification", noRecord: true},
		{file: "timer-doc.json", timer: &Timer{TriggerTime: time.Date(2023, 12, 26, 7, 49, 0, 0, time.UTC), TriggerName: "timer", Payload: `{"mode":"sweep"}`}},
		{file: "timer-nopayload.json", timer: &Timer{TriggerTime: time.Date(2026, 11, 28, 18, 0, 0, 0, time.UTC), TriggerName: "offpeak"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p, err := Decode(readFixture(t, tc.file))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if tc.timer != nil {
				if p.Timer == nil || len(p.Events) != 0 {
					t.Fatalf("want a timer only, got %+v", p)
				}
				if !p.Timer.TriggerTime.Equal(tc.timer.TriggerTime) || p.Timer.TriggerName != tc.timer.TriggerName || p.Timer.Payload != tc.timer.Payload {
					t.Fatalf("timer = %+v, want %+v", *p.Timer, *tc.timer)
				}
				return
			}
			if p.Timer != nil || len(p.Events) != tc.events || p.Duplicates != tc.duplicates {
				t.Fatalf("got timer=%v events=%d duplicates=%d, want events=%d duplicates=%d", p.Timer, len(p.Events), p.Duplicates, tc.events, tc.duplicates)
			}
			ev := p.Events[0]
			if ev.Type != tc.typ || ev.SpecVersion != SpecVersion || ev.ID == "" || ev.Source == "" {
				t.Fatalf("envelope = %+v", ev)
			}
			if tc.noRecord {
				if ev.Record != nil {
					t.Fatalf("a %s event must not get an ActionTrail record", ev.Type)
				}
				return
			}
			rec := ev.Record
			if rec == nil {
				t.Fatal("no ActionTrail record decoded")
			}
			if rec.EventName != tc.eventName || KMSKeyID(*rec) != tc.keyID || rec.EventType != tc.eventType {
				t.Fatalf("record name=%q keyId=%q type=%q, want %q %q %q", rec.EventName, KMSKeyID(*rec), rec.EventType, tc.eventName, tc.keyID, tc.eventType)
			}
			if tc.actor != "" && rec.UserIdentity.UserName != tc.actor {
				t.Fatalf("userName = %q, want %q", rec.UserIdentity.UserName, tc.actor)
			}
			if _, err := rec.Time(); err != nil {
				t.Fatalf("eventTime: %v", err)
			}
		})
	}
}

// normalize turns a fixture into the list of envelope objects it holds (strings decoded).
func normalize(t *testing.T, raw []byte) []any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	list, ok := v.([]any)
	if !ok {
		list = []any{v}
	}
	for i, e := range list {
		if s, ok := e.(string); ok {
			var o any
			if err := json.Unmarshal([]byte(s), &o); err != nil {
				t.Fatal(err)
			}
			list[i] = o
		}
	}
	return list
}

func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRoundTrip checks that decoding and encoding again loses nothing: every envelope attribute and the
// data bytes of every fixture come back equal, timers too, and an ActionTrail record survives
// encode -> decode unchanged.
func TestRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw := readFixture(t, filepath.Base(f))
			p, err := Decode(raw)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := normalize(t, raw)
			if p.Timer != nil {
				if got := jsonValue(t, p.Timer); !reflect.DeepEqual(got, want[0]) {
					t.Fatalf("timer round trip:\n got %v\nwant %v", got, want[0])
				}
				return
			}
			next := 0
			for _, ev := range p.Events {
				got := jsonValue(t, ev)
				// Skip the duplicates Decode dropped.
				for next < len(want) && want[next].(map[string]any)["id"] != got.(map[string]any)["id"] {
					next++
				}
				if next == len(want) {
					t.Fatalf("event %s not found in the fixture", ev.DedupKey())
				}
				if !reflect.DeepEqual(got, want[next]) {
					t.Fatalf("envelope round trip:\n got %v\nwant %v", got, want[next])
				}
				next++
				if ev.Record == nil {
					continue
				}
				b, err := json.Marshal(ev.Record)
				if err != nil {
					t.Fatal(err)
				}
				again, err := actiontrail.Decode(b)
				if err != nil {
					t.Fatalf("re-decode record: %v", err)
				}
				if !reflect.DeepEqual(&again, ev.Record) {
					t.Fatalf("record round trip:\n got %+v\nwant %+v", again, *ev.Record)
				}
			}
		})
	}
}

func TestDecodeDataAsString(t *testing.T) {
	p, err := Decode([]byte(`{"id":"1","source":"acs.kms","specversion":"1.0","type":"kms:ActionTrail:ApiCall",
		"data":"{\"eventId\":\"e\",\"eventName\":\"CreateKeyVersion\",\"requestParameters\":{\"KeyId\":\"k\"}}"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Events[0].Record; r == nil || r.EventName != KMSCreateKeyVersion || KMSKeyID(*r) != "k" {
		t.Fatalf("record = %+v", r)
	}
}

func TestDecodeMalformed(t *testing.T) {
	ce := func(extra string) string {
		return `{"id":"1","source":"acs.kms","specversion":"1.0","type":"kms:ActionTrail:ApiCall"` + extra + `}`
	}
	rec := `,"data":{"eventId":"e","eventName":"CreateKeyVersion"}`
	for _, tc := range []struct {
		name, in string
		index    int
		field    string
		problem  string
	}{
		{"empty", "", -1, "", "input is empty"},
		{"spaces", " \n\t", -1, "", "input is empty"},
		{"number", "42", -1, "", "neither a JSON object nor a JSON array"},
		{"string", `"hello"`, -1, "", "neither a JSON object nor a JSON array"},
		{"null", "null", -1, "", "neither a JSON object nor a JSON array"},
		{"bad json", `{"id":`, -1, "", "invalid JSON object"},
		{"trailing garbage", ce(rec) + "x", -1, "", "invalid JSON object"},
		{"invalid utf8", "{\"id\":\"\xff\"}", -1, "", "not valid UTF-8"},
		{"unknown object", `{"hello":"world"}`, -1, "", "neither a CloudEvent"},
		{"empty array", `[]`, -1, "", "array holds no events"},
		{"bad array", `[{"id":"1"},`, -1, "", "invalid JSON array"},
		{"array of numbers", `[1,2]`, 0, "", "neither a JSON object nor a JSON string"},
		{"array of arrays", `[[]]`, 0, "", "neither a JSON object nor a JSON string"},
		{"string of array", `["[]"]`, 0, "", "neither a JSON object nor a JSON string"},
		{"string of bad json", `["{\"id\":"]`, 0, "", "invalid JSON object"},
		{"timer in array", `[{"triggerTime":"2023-12-26T07:49:00Z","triggerName":"t"}]`, 0, "", "timer payload inside an array"},
		{"every element bad", `[{"x":1},{"y":2}]`, 0, "", "not a CloudEvent"},
		{"missing id", `{"source":"acs.kms","specversion":"1.0","type":"t"}`, -1, "id", "missing or empty"},
		{"missing source", `{"id":"1","specversion":"1.0","type":"t"}`, -1, "source", "missing or empty"},
		{"missing type", `{"id":"1","source":"s","specversion":"1.0"}`, -1, "type", "missing or empty"},
		{"missing specversion", `{"id":"1","source":"s","type":"t"}`, -1, "specversion", "missing or empty"},
		{"specversion 0.3", `{"id":"1","source":"s","specversion":"0.3","type":"t"}`, -1, "specversion", "not supported"},
		{"id is a number", `{"id":1,"source":"s","specversion":"1.0","type":"t"}`, -1, "id", "not a CloudEvent"},
		{"actiontrail without data", ce(""), -1, "data", "does not carry an ActionTrail record"},
		{"actiontrail data null", ce(`,"data":null`), -1, "data", "does not carry an ActionTrail record"},
		{"actiontrail data array", ce(`,"data":[1]`), -1, "data", "does not carry an ActionTrail record"},
		{"actiontrail data without eventName", ce(`,"data":{"eventId":"e"}`), -1, "data", "does not carry an ActionTrail record"},
		{"actiontrail data wrong types", ce(`,"data":{"eventName":"X","requestParameters":"KeyId=k"}`), -1, "data", "does not carry an ActionTrail record"},
		{"timer without time", `{"triggerName":"t"}`, -1, "triggerTime", "missing or zero"},
		{"timer without name", `{"triggerTime":"2023-12-26T07:49:00Z"}`, -1, "triggerName", "missing or empty"},
		{"timer bad time", `{"triggerTime":"yesterday","triggerName":"t"}`, -1, "", "not a timer payload"},
		{"timer payload object", `{"triggerTime":"2023-12-26T07:49:00Z","triggerName":"t","payload":{"a":1}}`, -1, "payload", "not a timer payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode([]byte(tc.in))
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", p)
			}
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrMalformed) || de.Retryable() {
				t.Fatalf("error %T %v is not a permanent *DecodeError", err, err)
			}
			if de.Index != tc.index || de.Field != tc.field || !strings.Contains(err.Error(), tc.problem) {
				t.Fatalf("error %q (index %d, field %q), want index %d, field %q, containing %q", err, de.Index, de.Field, tc.index, tc.field, tc.problem)
			}
		})
	}
}

// TestDecodeBatchWithAMalformedElement: a batch of three whose second element is malformed decodes
// the first and the third and reports the second by position.
func TestDecodeBatchWithAMalformedElement(t *testing.T) {
	first := `{"id":"1","source":"acs.oss","specversion":"1.0","type":"oss:x"}`
	third := `{"id":"3","source":"acs.oss","specversion":"1.0","type":"oss:x"}`
	p, err := Decode([]byte(`[` + first + `,{"id":2},` + third + `]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 2 || p.Events[0].ID != "1" || p.Events[1].ID != "3" {
		t.Fatalf("events %+v, want 1 and 3", p.Events)
	}
	if len(p.Rejected) != 1 || p.Rejected[0].Index != 1 || !strings.Contains(p.Rejected[0].Error(), "element 1") {
		t.Fatalf("rejected %+v, want element 1", p.Rejected)
	}
}

func TestDecodeSizeLimit(t *testing.T) {
	ev := `{"id":"1","source":"acs.oss","specversion":"1.0","type":"oss:x","data":"`
	pad := MaxInputBytes - len(ev) - 2
	ok := []byte(ev + strings.Repeat("a", pad) + `"}`)
	if len(ok) != MaxInputBytes {
		t.Fatalf("test input is %d bytes", len(ok))
	}
	if _, err := Decode(ok); err != nil {
		t.Fatalf("exactly %d bytes must be accepted: %v", MaxInputBytes, err)
	}
	tooBig := append(bytes.Clone(ok[:len(ok)-2]), []byte(`a"}`)...)
	_, err := Decode(tooBig)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than the 1048576 accepted") {
		t.Fatalf("%d bytes: err = %v", len(tooBig), err)
	}
}

func TestDedupKey(t *testing.T) {
	a := CloudEvent{Source: "acs.kms", ID: "1"}
	b := CloudEvent{Source: "acs.cs", ID: "1"}
	if a.DedupKey() == b.DedupKey() {
		t.Fatal("the same id from two sources must not collide")
	}
	if got := a.DedupKey().String(); got != "acs.kms/1" {
		t.Fatalf("String = %q", got)
	}
	// Same id, different source inside one batch: both kept.
	p, err := Decode([]byte(`[{"id":"1","source":"a","specversion":"1.0","type":"t"},{"id":"1","source":"b","specversion":"1.0","type":"t"},{"id":"1","source":"a","specversion":"1.0","type":"t"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 2 || p.Duplicates != 1 {
		t.Fatalf("events=%d duplicates=%d, want 2 and 1", len(p.Events), p.Duplicates)
	}
}
