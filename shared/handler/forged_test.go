package handler

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

// forge is the kms-createkeyversion fixture (a real rotation of the watched key) with mutate
// applied to its JSON object.
func forge(t *testing.T, id string, mutate func(ev, data map[string]any)) []byte {
	t.Helper()
	var ev map[string]any
	if err := json.Unmarshal(kmsEvent(t, "CreateKeyVersion", id), &ev); err != nil {
		t.Fatal(err)
	}
	mutate(ev, ev["data"].(map[string]any))
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForgedEventsNeverStartARun sends the rotation function events that look like a rotation of
// the watched key but must not be believed, in immediate mode with no settle delay (a job recorded
// would run at once): each is ignored with a reason, and nothing is recorded, run or sent.
func TestForgedEventsNeverStartARun(t *testing.T) {
	const other = "1111111111111111"
	for _, tc := range []struct {
		name   string
		mutate func(ev, data map[string]any)
		reason string
	}{
		{"account mismatch", func(ev, _ map[string]any) { ev["aliyunaccountid"] = other },
			"event of account " + other + ", not REKEY_ACCOUNT_ID " + account},
		{"account mismatch in userIdentity only", func(ev, data map[string]any) {
			delete(ev, "aliyunaccountid")
			data["userIdentity"].(map[string]any)["accountId"] = other
		}, "event of account " + other},
		{"region mismatch", func(ev, _ map[string]any) { ev["aliyunregionid"] = "cn-beijing" },
			"event of region cn-beijing, not REKEY_REGION " + region},
		{"region mismatch in acsRegion only", func(ev, data map[string]any) {
			delete(ev, "aliyunregionid")
			data["acsRegion"] = "cn-beijing"
		}, "event of region cn-beijing"},
		{"no account at all", func(ev, data map[string]any) {
			delete(ev, "aliyunaccountid")
			delete(data["userIdentity"].(map[string]any), "accountId")
		}, "names no account"},
		{"acs.cs source with a kms type", func(ev, _ map[string]any) { ev["source"] = events.SourceCS },
			`type "kms:ActionTrail:ApiCall" is not an ActionTrail type of source acs.cs`},
		{"acs.kms source with a cs type", func(ev, _ map[string]any) { ev["type"] = "cs:ActionTrail:ApiCall" },
			`type "cs:ActionTrail:ApiCall" is not an ActionTrail type of source acs.kms`},
		{"unknown source", func(ev, _ map[string]any) { ev["source"] = "acs.ecs" }, `source "acs.ecs"`},
		{"failed call", func(_, data map[string]any) {
			data["errorCode"] = "Forbidden.KeyNotFound"
			data["errorMessage"] = "The specified Key is not found."
		}, "CreateKeyVersion failed (errorCode Forbidden.KeyNotFound)"},
		{"KeyId ARN of another account", func(_, data map[string]any) {
			data["requestParameters"].(map[string]any)["KeyId"] = "acs:kms:" + region + ":" + other + ":key/" + keyA
		}, "KeyId is an ARN of account " + other + ", not REKEY_ACCOUNT_ID " + account},
		{"KeyId ARN of another region", func(_, data map[string]any) {
			data["requestParameters"].(map[string]any)["KeyId"] = "acs:kms:cn-beijing:" + account + ":key/" + keyA
		}, "KeyId is an ARN of region cn-beijing"},
		{"alias of an unknown key", func(_, data map[string]any) {
			data["requestParameters"].(map[string]any)["KeyId"] = "alias/not-ours"
		}, "key alias/not-ours is not watched"},
		{"another key", func(_, data map[string]any) {
			data["requestParameters"].(map[string]any)["KeyId"] = "key-someoneelse000000001"
		}, "is not watched"},
		{"KeyId malformed", func(_, data map[string]any) {
			data["requestParameters"].(map[string]any)["KeyId"] = "key/../../etc"
		}, "KeyId: "},
		{"no record", func(ev, _ map[string]any) { delete(ev, "data") }, "does not carry an ActionTrail record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, map[string]string{config.EnvRunMode: string(config.RunImmediate), config.EnvSettle: "0s"})
			e.kms.Rotate(keyA)
			res, err := e.rotation().Handle(fcContext("req-forged"), forge(t, "ev-forged", tc.mutate))
			if err != nil {
				t.Fatalf("error %v: FC would retry a forged event", err)
			}
			got := res.Error
			if len(res.Decisions) == 1 {
				d := res.Decisions[0]
				if d.Kind != policy.Ignore || d.Recorded != nil || d.Notice != nil {
					t.Fatalf("decision %s (recorded %+v, notice %+v): %s", d.Kind, d.Recorded, d.Notice, d.Reason)
				}
				got = d.Reason
			} else if res.Error == "" {
				t.Fatalf("result %+v: want one ignored decision or a decode error", res)
			}
			if !strings.Contains(got, tc.reason) {
				t.Fatalf("reason %q, want it to contain %q", got, tc.reason)
			}
			requireNothingHappened(t, e)
		})
	}

	// The same event unforged is a rotation that runs at once: the table above proves the forgeries,
	// not a setup that never runs anything.
	t.Run("control: the genuine event runs", func(t *testing.T) {
		e := newEnv(t, map[string]string{config.EnvRunMode: string(config.RunImmediate), config.EnvSettle: "0s"})
		e.kms.Rotate(keyA)
		res, err := e.rotation().Handle(fcContext("req-genuine"), forge(t, "ev-genuine", func(_, _ map[string]any) {}))
		if err != nil || len(res.Decisions) != 1 || res.Decisions[0].Kind != policy.Rotate || len(e.runner.clusters()) != 2 {
			t.Fatalf("genuine event: %+v, %v; ran on %v", res, err, e.runner.clusters())
		}
	})
}

// TestOversizedInputIsRefused: an invocation payload over 1 MiB is refused before it is parsed,
// even when it is a well-formed event of the watched key; exactly 1 MiB is still read.
func TestOversizedInputIsRefused(t *testing.T) {
	pad := func(n int) []byte {
		b := forge(t, "ev-big", func(_, data map[string]any) { data["padding"] = "" })
		return forge(t, "ev-big", func(_, data map[string]any) { data["padding"] = strings.Repeat("x", n-len(b)) })
	}
	e := newEnv(t, map[string]string{config.EnvRunMode: string(config.RunImmediate), config.EnvSettle: "0s"})
	e.kms.Rotate(keyA)
	big := pad(events.MaxInputBytes + 1)
	if len(big) != events.MaxInputBytes+1 {
		t.Fatalf("padded to %d bytes", len(big))
	}
	res, err := e.rotation().Handle(fcContext("req-big"), big)
	if err != nil || !strings.Contains(res.Error, "more than the 1048576 accepted") || len(res.Decisions) != 0 {
		t.Fatalf("1 MiB + 1: %+v, %v; want a decode error naming the limit", res, err)
	}
	requireNothingHappened(t, e)

	limit := pad(events.MaxInputBytes)
	res, err = e.rotation().Handle(fcContext("req-limit"), limit)
	if err != nil || res.Error != "" || len(res.Decisions) != 1 || res.Decisions[0].Kind != policy.Rotate {
		t.Fatalf("exactly 1 MiB: %+v, %v; want it decided", res, err)
	}
}

// requireNothingHappened fails when a job was recorded or run, a notice sent, or the event
// remembered as handled on any cluster.
func requireNothingHappened(t *testing.T, e *env) {
	t.Helper()
	if got := e.runner.clusters(); len(got) != 0 {
		t.Fatalf("jobs ran on %v", got)
	}
	if len(e.notifier.sent) != 0 {
		t.Fatalf("%d notices sent", len(e.notifier.sent))
	}
	for _, c := range []string{c1, c2} {
		if p := e.pending(c); len(p) != 0 {
			t.Fatalf("%s: %d jobs pending", c, len(p))
		}
		st, err := e.stores[c].Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Handled) != 0 {
			t.Fatalf("%s: events recorded as handled: %v", c, st.Handled)
		}
	}
}
