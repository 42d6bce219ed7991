package kms

import (
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	id := "3a6a031d-7b2c-4c8e-9d3f-1e2d3c4b5a69"
	got := Redact(id)
	if got != Redact(id) {
		t.Fatal("Redact is not stable")
	}
	if strings.Contains(got, id[:9]) || !strings.HasPrefix(got, "3a6a…") || len([]rune(got)) != 4+1+8 {
		t.Fatalf("Redact(%s) = %q, want 4 characters, an ellipsis and 8 hex digits", id, got)
	}
	if Redact(id) == Redact("3a6a031d-0000-4c8e-9d3f-1e2d3c4b5a69") {
		t.Fatal("Redact gives two IDs with the same prefix the same result")
	}
	for ref, prefix := range map[string]string{
		"acs:kms:cn-hangzhou:5068000000000001:key/3a6a031d-7b2c": "3a6a…",
		"alias/rekey-main": "reke…",
		"abc":              "a…",
		"":                 "<none>",
	} {
		if got := Redact(ref); !strings.HasPrefix(got, prefix) || (ref != "" && strings.Contains(got, ref)) {
			t.Errorf("Redact(%q) = %q, want prefix %q and not the reference", ref, got, prefix)
		}
	}
}

func TestParseTimeAndRotationPeriod(t *testing.T) {
	want := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	for in, w := range map[string]time.Time{
		"2025-03-01T08:00:00Z":      want,
		"2025-03-01T16:00:00+08:00": want,
		"2025-03-01T08:00Z":         want,
		"":                          {},
		"yesterday":                 {},
	} {
		if got := parseTime(in); !got.Equal(w) {
			t.Errorf("parseTime(%q) = %v, want %v", in, got, w)
		}
	}
	for in, w := range map[string]time.Duration{
		"31536000s": 365 * 24 * time.Hour, "604800s": 7 * 24 * time.Hour, "": 0, "7d": 0, "-5s": 0, "s": 0,
	} {
		got, ok := KeyMetadata{RotationInterval: in}.RotationPeriod()
		if got != w || ok != (w != 0) {
			t.Errorf("RotationPeriod(%q) = %v, %v; want %v", in, got, ok, w)
		}
	}
}
