package deploy_test

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// expandHours expands a cron hour field of numbers, ranges and lists ("1-4", "1,2,3", "1-4/2").
func expandHours(t *testing.T, field string) []int {
	t.Helper()
	var out []int
	for _, part := range strings.Split(field, ",") {
		step := 1
		if r, s, ok := strings.Cut(part, "/"); ok {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				t.Fatalf("hour field %q: bad step", field)
			}
			part, step = r, n
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			t.Fatalf("hour field %q: %v", field, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				t.Fatalf("hour field %q: %v", field, err)
			}
		}
		for h := a; h <= b; h += step {
			out = append(out, h)
		}
	}
	return out
}

func mustDate(loc *time.Location, hour, minute int) time.Time {
	return time.Date(2026, 11, 28, hour, minute, 0, 0, loc)
}
