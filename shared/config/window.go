package config

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a daily time window [Start, End) in a zone, as minutes after local midnight. Start > End
// means the window spans midnight (22:00-04:00); End may be 24:00 (1440).
type Window struct {
	// Start and End are minutes after local midnight; Start != End.
	Start, End int
	// Location is the zone the window is read in.
	Location *time.Location
}

// ParseWindow parses "HH:MM-HH:MM" in loc. "24:00" is accepted as an end; an empty window
// (start == end) is refused.
func ParseWindow(s string, loc *time.Location) (Window, error) {
	if loc == nil {
		loc = time.UTC
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Window{}, fmt.Errorf("%q is not HH:MM-HH:MM", s)
	}
	start, err := parseClock(strings.TrimSpace(a), false)
	if err != nil {
		return Window{}, fmt.Errorf("%q: start: %w", s, err)
	}
	end, err := parseClock(strings.TrimSpace(b), true)
	if err != nil {
		return Window{}, fmt.Errorf("%q: end: %w", s, err)
	}
	if start == end {
		return Window{}, fmt.Errorf("%q is empty (start equals end); for all day use 00:00-24:00", s)
	}
	return Window{Start: start, End: end, Location: loc}, nil
}

func parseClock(s string, allow24 bool) (int, error) {
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) != 2 || len(mm) != 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	if err1 != nil || err2 != nil || h < 0 || m < 0 || m > 59 || hh[0] == '+' || mm[0] == '+' {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	if h == 24 && m == 0 && allow24 {
		return 24 * 60, nil
	}
	if h > 23 {
		return 0, fmt.Errorf("%q: hour %d is out of range", s, h)
	}
	return h*60 + m, nil
}

// Contains reports whether t falls inside the window, judged by t's wall clock in the window's zone.
func (w Window) Contains(t time.Time) bool {
	loc := w.Location
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	// Seconds after midnight, so that 04:59:59 is inside 01:00-05:00 and 05:00:00 is not.
	x := lt.Hour()*3600 + lt.Minute()*60 + lt.Second()
	start, end := w.Start*60, w.End*60
	if start < end {
		return x >= start && x < end
	}
	return x >= start || x < end
}

// String returns "HH:MM-HH:MM Zone".
func (w Window) String() string {
	zone := "UTC"
	if w.Location != nil {
		zone = w.Location.String()
	}
	return fmt.Sprintf("%02d:%02d-%02d:%02d %s", w.Start/60, w.Start%60, w.End/60, w.End%60, zone)
}

// MarshalJSON encodes the window as its String.
func (w Window) MarshalJSON() ([]byte, error) { return json.Marshal(w.String()) }

// Left returns how long the window lasts after t, 0 when t is outside it. It counts by t's wall
// clock in the window's zone (a day that gains or loses an hour is counted as 24 hours).
func (w Window) Left(t time.Time) time.Duration {
	if !w.Contains(t) {
		return 0
	}
	loc := w.Location
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	x := time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute + time.Duration(lt.Second())*time.Second +
		time.Duration(lt.Nanosecond())
	end := time.Duration(w.End) * time.Minute
	if end <= x { // the window spans midnight and t is before it
		end += 24 * time.Hour
	}
	return end - x
}
