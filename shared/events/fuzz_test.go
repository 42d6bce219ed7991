package events

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode checks that Decode never panics, that it returns either a *DecodeError or exactly one of a
// timer and a non-empty event list, and that what it accepts is well formed and survives a round trip.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{"", "[]", "{}", "null", `[""]`, `["{}"]`, `{"triggerName":"t"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := Decode(raw)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %T is not a *DecodeError: %v", err, err)
			}
			return
		}
		if (p.Timer == nil) == (len(p.Events) == 0) {
			t.Fatalf("want exactly one of a timer and events: %+v", p)
		}
		if p.Timer != nil {
			if p.Timer.TriggerTime.IsZero() || p.Timer.TriggerName == "" {
				t.Fatalf("accepted timer without time or name: %+v", *p.Timer)
			}
			return
		}
		seen := map[DedupKey]bool{}
		for _, ev := range p.Events {
			if ev.ID == "" || ev.Source == "" || ev.Type == "" || ev.SpecVersion != SpecVersion {
				t.Fatalf("accepted incomplete envelope: %+v", ev)
			}
			if seen[ev.DedupKey()] {
				t.Fatalf("duplicate %s kept", ev.DedupKey())
			}
			seen[ev.DedupKey()] = true
			if _, _, ok := ActionTrailType(ev.Type); ok != (ev.Record != nil) {
				t.Fatalf("type %q: record decoded = %v", ev.Type, ev.Record != nil)
			}
			// Re-encoding the accepted event must decode to the same event (json.Marshal escapes <, > and
			// & six-fold, so stay well under the size limit).
			if len(raw) > MaxInputBytes/8 {
				continue
			}
			b, err := json.Marshal(ev)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			again, err := Decode(b)
			if err != nil {
				t.Fatalf("re-decode of an accepted event: %v\n%s", err, b)
			}
			if got := again.Events[0]; got.DedupKey() != ev.DedupKey() || got.Type != ev.Type || (got.Record == nil) != (ev.Record == nil) {
				t.Fatalf("round trip changed the event: %+v -> %+v", ev, got)
			}
		}
	})
}
