package config

import (
	"testing"
	"time"
)

func TestWindowContains(t *testing.T) {
	sh, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	at := func(h, m, s int) time.Time { return time.Date(2026, 11, 28, h, m, s, 0, sh) }
	for _, tc := range []struct {
		window string
		t      time.Time
		want   bool
	}{
		{"01:00-05:00", at(1, 0, 0), true},
		{"01:00-05:00", at(4, 59, 59), true},
		{"01:00-05:00", at(5, 0, 0), false},
		{"01:00-05:00", at(0, 59, 59), false},
		{"01:00-05:00", at(12, 0, 0), false},
		// The same instant given in UTC: 18:30 UTC is 02:30 in Shanghai.
		{"01:00-05:00", time.Date(2026, 11, 27, 18, 30, 0, 0, time.UTC), true},
		{"01:00-05:00", time.Date(2026, 11, 28, 2, 30, 0, 0, time.UTC), false},
		// Wrapping midnight.
		{"22:00-04:00", at(22, 0, 0), true},
		{"22:00-04:00", at(23, 59, 59), true},
		{"22:00-04:00", at(0, 0, 0), true},
		{"22:00-04:00", at(3, 59, 59), true},
		{"22:00-04:00", at(4, 0, 0), false},
		{"22:00-04:00", at(21, 59, 59), false},
		{"22:00-04:00", at(12, 0, 0), false},
		// All day and end of day.
		{"00:00-24:00", at(0, 0, 0), true},
		{"00:00-24:00", at(23, 59, 59), true},
		{"20:00-24:00", at(23, 59, 59), true},
		{"20:00-24:00", at(0, 0, 0), false},
		{"00:00-00:01", at(0, 0, 59), true},
		{"00:00-00:01", at(0, 1, 0), false},
	} {
		w, err := ParseWindow(tc.window, sh)
		if err != nil {
			t.Fatalf("ParseWindow(%q): %v", tc.window, err)
		}
		if got := w.Contains(tc.t); got != tc.want {
			t.Errorf("%s Contains(%s) = %v, want %v", w, tc.t, got, tc.want)
		}
	}
}

func TestParseWindowErrors(t *testing.T) {
	for _, s := range []string{"", "01:00", "01:00-", "-05:00", "1:00-05:00", "01:60-05:00", "01:00-24:01", "24:00-01:00",
		"01:00-01:00", "aa:bb-cc:dd", "+1:00-05:00", "01:+5-05:00", "01:00-05:00-06:00"} {
		if w, err := ParseWindow(s, time.UTC); err == nil {
			t.Errorf("ParseWindow(%q) = %s, want an error", s, w)
		}
	}
}

func TestWindowLeft(t *testing.T) {
	sh, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	day, err := ParseWindow("01:00-05:00", sh)
	if err != nil {
		t.Fatal(err)
	}
	night, err := ParseWindow("22:00-04:00", sh)
	if err != nil {
		t.Fatal(err)
	}
	at := func(h, m int) time.Time { return time.Date(2026, 12, 8, h, m, 0, 0, sh) }
	for _, c := range []struct {
		w    Window
		t    time.Time
		want time.Duration
	}{
		{day, at(4, 58), 2 * time.Minute},
		{day, at(1, 0), 4 * time.Hour},
		{day, at(5, 0), 0},
		{day, at(12, 0), 0},
		{night, at(23, 30), 4*time.Hour + 30*time.Minute},
		{night, at(3, 59), time.Minute},
	} {
		if got := c.w.Left(c.t); got != c.want {
			t.Errorf("%s at %s: Left = %s, want %s", c.w, c.t.Format("15:04"), got, c.want)
		}
	}
}
