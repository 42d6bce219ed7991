package events

import (
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	cst := time.FixedZone("", 8*3600)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"2026-11-28T09:21:32Z", time.Date(2026, 11, 28, 9, 21, 32, 0, time.UTC)},
		{"2026-11-28T09:21:32.123456789Z", time.Date(2026, 11, 28, 9, 21, 32, 123456789, time.UTC)},
		{"2026-11-28T17:21:32+08:00", time.Date(2026, 11, 28, 9, 21, 32, 0, time.UTC)},
		{"2020-11-19T21:04:42.179PRC", time.Date(2020, 11, 19, 21, 4, 42, 179e6, cst)},
		{"2020-11-19T21:04:42PRC", time.Date(2020, 11, 19, 21, 4, 42, 0, cst)},
		{"2020-11-19T21:04:42.179CST", time.Date(2020, 11, 19, 21, 4, 42, 179e6, cst)},
		{"2020-08-17T16:04:46.149Asia/Shanghai", time.Date(2020, 8, 17, 16, 4, 46, 149e6, cst)},
		{"2020-11-19 21:04:42 UTC", time.Date(2020, 11, 19, 21, 4, 42, 0, time.UTC)},
		{"2020-11-19T21:04:42.5GMT", time.Date(2020, 11, 19, 21, 4, 42, 5e8, time.UTC)},
		{"2020-11-19T21:04:42+0800", time.Date(2020, 11, 19, 13, 4, 42, 0, time.UTC)},
		{"1605791082179", time.UnixMilli(1605791082179)},
	} {
		got, err := ParseTime(tc.in)
		if err != nil {
			t.Errorf("ParseTime(%q): %v", tc.in, err)
			continue
		}
		if !got.Equal(tc.want) {
			t.Errorf("ParseTime(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "2020-11-19T21:04:42", "2020-11-19T21:04:42.179", "2020-11-19T21:04:42EST",
		"2020-13-19T21:04:42Z", "2020-11-19T25:04:42PRC", "123", "2020-11-19T21:04:42 Europe/Berlin", "2020-11-19T21:04:42PRC" + string(make([]byte, 60))} {
		if got, err := ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", bad, got)
		}
	}
}

func TestEnvelopeTimes(t *testing.T) {
	ev := CloudEvent{ID: "1", Source: "acs.kms", Time: "2026-11-28T09:21:32Z", AliyunPublishTime: "2026-11-28T17:21:33.120PRC"}
	et, err := ev.EventTime()
	if err != nil || !et.Equal(time.Date(2026, 11, 28, 9, 21, 32, 0, time.UTC)) {
		t.Fatalf("EventTime = %v, %v", et, err)
	}
	pt, err := ev.PublishTime()
	if err != nil || !pt.Equal(time.Date(2026, 11, 28, 9, 21, 33, 120e6, time.UTC)) {
		t.Fatalf("PublishTime = %v, %v", pt, err)
	}
	if _, err := (CloudEvent{ID: "1", Source: "s", AliyunPublishTime: "soon"}).PublishTime(); err == nil {
		t.Fatal("want an error for a bad publish time")
	}
}

func TestActionTrailType(t *testing.T) {
	for typ, want := range map[string][2]string{
		"kms:ActionTrail:ApiCall":            {"kms", "ApiCall"},
		"cs:ActionTrail:ConsoleOperation":    {"cs", "ConsoleOperation"},
		"kms:ActionTrail:AliyunServiceEvent": {"kms", "AliyunServiceEvent"},
	} {
		p, k, ok := ActionTrailType(typ)
		if !ok || p != want[0] || k != want[1] {
			t.Errorf("ActionTrailType(%q) = %q %q %v", typ, p, k, ok)
		}
	}
	for _, typ := range []string{"", "kms:Config:ConfigurationItemChangeNotification", "kms:ActionTrail", ":ActionTrail:ApiCall", "kms:ActionTrail:", "a:ActionTrail:b:c"} {
		if _, _, ok := ActionTrailType(typ); ok {
			t.Errorf("ActionTrailType(%q) ok", typ)
		}
	}
}
