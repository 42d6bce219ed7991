package eventbridge

import (
	"encoding/json"
	"testing"
)

// FuzzMatch checks that no pattern or event makes the matcher panic, that
// matching is deterministic, and that it depends on the event's values, not on
// its spelling: re-encoding the decoded event gives the same answer.
func FuzzMatch(f *testing.F) {
	f.Add(`{"source":["acs.kms"],"data":{"eventName":["CreateKeyVersion"]}}`,
		[]byte(`{"source":"acs.kms","data":{"eventName":"CreateKeyVersion"}}`))
	f.Add(`{"data":{"n":[{"numeric":[">",0,"<=",5]}],"ip":[{"cidr":"10.0.0.0/24"}]}}`,
		[]byte(`{"data":{"n":5,"ip":"10.0.0.9"}}`))
	f.Add(`{"data":{"s":[{"anything-but":{"prefix":"a"}},{"exists":false},null,""]}}`,
		[]byte(`{"data":{"s":["b",null,""]}}`))
	f.Add(`{"subject":[{"suffix":".jpg"},{"contains":"x"},{"prefix":""}]}`, []byte(docEvent))
	f.Add(`{"data":{"a":{"b":[{"anything-but":[1,"2"]}]}}}`, []byte(`{"data":{"a":{"b":[1.0,"\u0032"]}}}`))
	f.Fuzz(func(t *testing.T, pattern string, event []byte) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		obj, err := DecodeEvent(event)
		if err != nil {
			if _, merr := p.Match(event); merr == nil {
				t.Fatalf("Match accepted an event DecodeEvent refused: %s", event)
			}
			return
		}
		got := p.MatchDecoded(obj)
		again, err := p.Match(event)
		if err != nil || again != got {
			t.Fatalf("Match = %v, %v; MatchDecoded = %v", again, err, got)
		}
		reencoded, err := json.Marshal(obj)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		round, err := p.Match(reencoded)
		if err != nil || round != got {
			t.Fatalf("re-encoded event %s: Match = %v, %v; original %v", reencoded, round, err, got)
		}
	})
}
