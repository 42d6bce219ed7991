package eventbridge

import (
	"errors"
	"testing"
)

// docEvent is the OSS sample of Alibaba's event pattern documentation, with
// fields added so that every operator has something to bite on.
const docEvent = `{
  "id": "7adc8c1a-645d-4476-bdef-5d6fb57f****",
  "source": "acs.oss",
  "specversion": "1.0",
  "type": "oss:ObjectCreated:PostObject",
  "datacontenttype": "application/json",
  "subject": "acs:oss:cn-hangzhou:1234567:xls-papk/game_apk/123.jpg",
  "time": "2020-08-17T16:04:46.149Asia/Shanghai",
  "aliyunpublishtime": "2020-08-17T16:04:46.149PRC",
  "data": {
    "name": "test",
    "scope": 100,
    "ratio": 300.0,
    "state": "running",
    "source-ip": "10.0.0.123",
    "v6": "2001:db8::1",
    "eventVersion": "",
    "responseElements": null,
    "enabled": true,
    "tags": ["blue", "green"],
    "sizes": [1, 5, 10],
    "empty": [],
    "object": {"inner": "x", "deeper": {"k": "v"}},
    "count-as-string": "5"
  }
}`

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pattern string
		want    bool
	}{
		// Exact values, AND of keys, OR of array values.
		{"exact source", `{"source":["acs.oss"]}`, true},
		{"exact source mismatch", `{"source":["acs.kms"]}`, false},
		{"exact is case-sensitive", `{"source":["ACS.OSS"]}`, false},
		{"or in array", `{"source":["acs.kms","acs.oss"]}`, true},
		{"and of keys", `{"source":["acs.oss"],"type":["oss:ObjectCreated:PostObject"]}`, true},
		{"and of keys one fails", `{"source":["acs.oss"],"type":["oss:ObjectRemoved:DeleteObject"]}`, false},
		{"missing key", `{"nosuchkey":["x"]}`, false},
		{"empty pattern matches all", `{}`, true},
		{"nested data exact", `{"data":{"name":["test"]}}`, true},
		{"nested data mismatch", `{"data":{"name":["prod"]}}`, false},
		{"deep nesting under data", `{"data":{"object":{"deeper":{"k":["v"]}}}}`, true},
		{"deep nesting mismatch", `{"data":{"object":{"deeper":{"k":["w"]}}}}`, false},
		{"nested pattern on scalar", `{"data":{"name":{"x":["y"]}}}`, false},
		{"number exact", `{"data":{"scope":[100]}}`, true},
		{"number compares as string 100.0", `{"data":{"scope":[100.0]}}`, false},
		{"number compares as string 1e2", `{"data":{"scope":[1e2]}}`, false},
		{"number literal 300.0 as written", `{"data":{"ratio":[300.0]}}`, true},
		{"number literal 300 vs 300.0", `{"data":{"ratio":[300]}}`, false},
		{"string never equals number", `{"data":{"scope":["100"]}}`, false},
		{"number never equals string", `{"data":{"count-as-string":[5]}}`, false},
		{"boolean exact", `{"data":{"enabled":[true]}}`, true},
		{"boolean mismatch", `{"data":{"enabled":[false]}}`, false},
		// Empty string and null.
		{"empty string", `{"data":{"eventVersion":[""]}}`, true},
		{"empty string is not null", `{"data":{"responseElements":[""]}}`, false},
		{"null", `{"data":{"responseElements":[null]}}`, true},
		{"null is not empty string", `{"data":{"eventVersion":[null]}}`, false},
		{"null does not match a missing field", `{"data":{"nosuch":[null]}}`, false},
		// prefix, suffix, contains.
		{"prefix", `{"source":[{"prefix":"acs."}]}`, true},
		{"prefix mismatch", `{"source":[{"prefix":"aws."}]}`, false},
		{"prefix on number", `{"data":{"scope":[{"prefix":"1"}]}}`, false},
		{"prefix empty string", `{"source":[{"prefix":""}]}`, true},
		{"suffix", `{"subject":[{"suffix":".jpg"}]}`, true},
		{"suffix mismatch", `{"subject":[{"suffix":".png"}]}`, false},
		{"contains", `{"type":[{"contains":"Created"}]}`, true},
		{"contains mismatch", `{"type":[{"contains":"Normal"}]}`, false},
		{"contains missing field", `{"data":{"nosuch":[{"contains":"a"}]}}`, false},
		// anything-but.
		{"anything-but string", `{"data":{"state":[{"anything-but":"initializing"}]}}`, true},
		{"anything-but string equal", `{"data":{"state":[{"anything-but":"running"}]}}`, false},
		{"anything-but number", `{"data":{"scope":[{"anything-but":123}]}}`, true},
		{"anything-but number equal", `{"data":{"scope":[{"anything-but":100}]}}`, false},
		{"anything-but number vs string", `{"data":{"count-as-string":[{"anything-but":5}]}}`, true},
		{"anything-but list", `{"data":{"state":[{"anything-but":["stopped","overloaded"]}]}}`, true},
		{"anything-but list contains", `{"data":{"state":[{"anything-but":["stopped","running"]}]}}`, false},
		{"anything-but prefix", `{"data":{"state":[{"anything-but":{"prefix":"init"}}]}}`, true},
		{"anything-but prefix hit", `{"data":{"state":[{"anything-but":{"prefix":"run"}}]}}`, false},
		{"anything-but missing field", `{"data":{"nosuch":[{"anything-but":"x"}]}}`, false},
		// numeric.
		{"numeric range", `{"data":{"scope":[{"numeric":[">",0,"<=",100]}]}}`, true},
		{"numeric range exclusive upper", `{"data":{"scope":[{"numeric":[">",0,"<",100]}]}}`, false},
		{"numeric equals", `{"data":{"scope":[{"numeric":["=",100]}]}}`, true},
		{"numeric equals other", `{"data":{"scope":[{"numeric":["=",101]}]}}`, false},
		{"numeric equals value 300.0", `{"data":{"ratio":[{"numeric":["=",300]}]}}`, true},
		{"numeric greater", `{"data":{"scope":[{"numeric":[">=",100]}]}}`, true},
		{"numeric lower", `{"data":{"scope":[{"numeric":["<",5]}]}}`, false},
		{"numeric on string", `{"data":{"count-as-string":[{"numeric":["=",5]}]}}`, false},
		{"numeric missing", `{"data":{"nosuch":[{"numeric":[">",0]}]}}`, false},
		// cidr.
		{"cidr", `{"data":{"source-ip":[{"cidr":"10.0.0.0/24"}]}}`, true},
		{"cidr unmasked block", `{"data":{"source-ip":[{"cidr":"10.0.0.77/24"}]}}`, true},
		{"cidr outside", `{"data":{"source-ip":[{"cidr":"10.0.1.0/24"}]}}`, false},
		{"cidr on non-ip", `{"data":{"name":[{"cidr":"10.0.0.0/8"}]}}`, false},
		{"cidr on ipv6 value", `{"data":{"v6":[{"cidr":"0.0.0.0/0"}]}}`, false},
		// exists.
		{"exists true", `{"data":{"state":[{"exists":true}]}}`, true},
		{"exists true missing", `{"data":{"nosuch":[{"exists":true}]}}`, false},
		{"exists false missing", `{"data":{"nosuch":[{"exists":false}]}}`, true},
		{"exists false present", `{"data":{"state":[{"exists":false}]}}`, false},
		{"exists true on null", `{"data":{"responseElements":[{"exists":true}]}}`, true},
		{"exists true on object", `{"data":{"object":[{"exists":true}]}}`, true},
		{"exists true on empty array", `{"data":{"empty":[{"exists":true}]}}`, true},
		{"exists false under missing parent", `{"data":{"nosuch":{"deeper":[{"exists":false}]}}}`, true},
		{"exists true under missing parent", `{"data":{"nosuch":{"deeper":[{"exists":true}]}}}`, false},
		{"exists top level", `{"subject":[{"exists":true}],"dataschema":[{"exists":false}]}`, true},
		{"exact or exists false", `{"data":{"nosuch":["a",{"exists":false}]}}`, true},
		// Arrays in the event match on intersection.
		{"event array intersects", `{"data":{"tags":["red","green"]}}`, true},
		{"event array disjoint", `{"data":{"tags":["red","yellow"]}}`, false},
		{"event array prefix", `{"data":{"tags":[{"prefix":"gr"}]}}`, true},
		{"event array numeric", `{"data":{"sizes":[{"numeric":[">",9]}]}}`, true},
		{"event array numeric none", `{"data":{"sizes":[{"numeric":[">",10]}]}}`, false},
		{"event array anything-but", `{"data":{"tags":[{"anything-but":"blue"}]}}`, true},
		{"event array anything-but all", `{"data":{"tags":[{"anything-but":["blue","green"]}]}}`, false},
		{"empty event array exact", `{"data":{"empty":["x"]}}`, false},
		{"object value at leaf", `{"data":{"object":["x"]}}`, false},
		{"object value anything-but", `{"data":{"object":[{"anything-but":"x"}]}}`, false},
		// The rotation trigger's pattern from the reference.
		{"reference kms rule on oss", `{"source":["acs.kms"],"type":["kms:ActionTrail:ApiCall"],"data":{"eventName":["CreateKeyVersion"]}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePattern(tc.pattern)
			if err != nil {
				t.Fatalf("ParsePattern(%s): %v", tc.pattern, err)
			}
			got, err := p.Match([]byte(docEvent))
			if err != nil {
				t.Fatalf("Match: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Match(%s) = %v, want %v", tc.pattern, got, tc.want)
			}
		})
	}
}

func TestPatternKMSRule(t *testing.T) {
	p := MustParsePattern(`{"source":["acs.kms"],"type":["kms:ActionTrail:ApiCall","kms:ActionTrail:ConsoleOperation"],
	  "data":{"eventName":["CreateKeyVersion","DisableKey","EnableKey","ScheduleKeyDeletion","CancelKeyDeletion","UpdateRotationPolicy"]}}`)
	for ev, want := range map[string]bool{
		`{"source":"acs.kms","type":"kms:ActionTrail:ApiCall","data":{"eventName":"CreateKeyVersion"}}`:            true,
		`{"source":"acs.kms","type":"kms:ActionTrail:ConsoleOperation","data":{"eventName":"DisableKey"}}`:         true,
		`{"source":"acs.kms","type":"kms:ActionTrail:ApiCall","data":{"eventName":"Encrypt"}}`:                     false,
		`{"source":"acs.kms","type":"kms:ActionTrail:AliyunServiceEvent","data":{"eventName":"CreateKeyVersion"}}`: false,
		`{"source":"acs.cs","type":"kms:ActionTrail:ApiCall","data":{"eventName":"CreateKeyVersion"}}`:             false,
		`{"source":"acs.kms","type":"kms:ActionTrail:ApiCall","data":"{\"eventName\":\"CreateKeyVersion\"}"}`:      false,
		`{"source":"acs.kms","type":"kms:ActionTrail:ApiCall"}`:                                                    false,
	} {
		got, err := p.Match([]byte(ev))
		if err != nil {
			t.Fatalf("Match(%s): %v", ev, err)
		}
		if got != want {
			t.Errorf("Match(%s) = %v, want %v", ev, got, want)
		}
	}
}

func TestParsePatternInvalid(t *testing.T) {
	for _, bad := range []string{
		``,
		`not json`,
		`[]`,
		`"source"`,
		`null`,
		`{"source":"acs.kms"}`,
		`{"source":[]}`,
		`{"source":[["acs.kms"]]}`,
		`{"source":{"prefix":"acs."}}`,
		`{"type":{"x":["y"]}}`,
		`{"source":["acs.kms"]} {}`,
		`{"$or":[{"source":["a"]},{"type":["b"]}]}`,
		`{"data":{"$or":[{"a":["b"]}]}}`,
		`{"source":[{}]}`,
		`{"source":[{"prefix":"a","suffix":"b"}]}`,
		`{"source":[{"prefix":1}]}`,
		`{"source":[{"suffix":null}]}`,
		`{"source":[{"contains":["a"]}]}`,
		`{"source":[{"wildcard":"a*"}]}`,
		`{"source":[{"equals-ignore-case":"a"}]}`,
		`{"data":{"state":[{"anything-but":[]}]}}`,
		`{"data":{"state":[{"anything-but":true}]}}`,
		`{"data":{"state":[{"anything-but":[{"prefix":"a"}]}]}}`,
		`{"data":{"state":[{"anything-but":{"suffix":"a"}}]}}`,
		`{"data":{"state":[{"anything-but":{"prefix":1}}]}}`,
		`{"data":{"n":[{"numeric":[]}]}}`,
		`{"data":{"n":[{"numeric":[">"]}]}}`,
		`{"data":{"n":[{"numeric":["!=",1]}]}}`,
		`{"data":{"n":[{"numeric":[">","1"]}]}}`,
		`{"data":{"n":[{"numeric":[">",1,"<"]}]}}`,
		`{"data":{"n":[{"numeric":["<",1,">",0]}]}}`,
		`{"data":{"n":[{"numeric":[">",5,"<",1]}]}}`,
		`{"data":{"n":[{"numeric":["=",1,"<",2]}]}}`,
		`{"data":{"n":[{"numeric":[">",1e999]}]}}`,
		`{"data":{"n":[{"numeric":1}]}}`,
		`{"data":{"ip":[{"cidr":"10.0.0.0"}]}}`,
		`{"data":{"ip":[{"cidr":"10.0.0.0/33"}]}}`,
		`{"data":{"ip":[{"cidr":"2001:db8::/32"}]}}`,
		`{"data":{"ip":[{"cidr":24}]}}`,
		`{"data":{"x":[{"exists":"true"}]}}`,
		`{"data":{"x":[{"exists":1}]}}`,
		`{"data":{"x":"y"}}`,
		`{"data":{"x":1}}`,
	} {
		p, err := ParsePattern(bad)
		if err == nil {
			t.Errorf("ParsePattern(%q) = %v, want an error", bad, p)
			continue
		}
		if !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("ParsePattern(%q) error %v does not match ErrInvalidPattern", bad, err)
		}
	}
}

func TestMatchRefusesNonObject(t *testing.T) {
	p := MustParsePattern(`{}`)
	for _, ev := range []string{``, `[]`, `"x"`, `{"a":1} {}`, `{`} {
		if _, err := p.Match([]byte(ev)); err == nil {
			t.Errorf("Match(%q): want an error", ev)
		}
	}
}

func TestPatternString(t *testing.T) {
	const src = `{"source":["acs.kms"]}`
	if got := MustParsePattern(src).String(); got != src {
		t.Fatalf("String() = %q", got)
	}
}
