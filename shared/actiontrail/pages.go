package actiontrail

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// LookupWindow is how far back LookupEvents reaches: ActionTrail keeps the last 90 days of events
// searchable; older ones are only in a trail's delivery target (OSS or SLS).
const LookupWindow = 90 * 24 * time.Hour

// Defaults for the zero Query.
const (
	DefaultMaxEvents = 1000
	DefaultMaxPages  = 40
	// maxPageSize is LookupEvents' MaxResults limit.
	maxPageSize = 50
)

// ClampStart returns start, or the oldest time LookupEvents can search at now when start is
// earlier, and whether it moved it.
func ClampStart(start, now time.Time) (time.Time, bool) {
	if oldest := now.Add(-LookupWindow); start.Before(oldest) {
		return oldest, true
	}
	return start, false
}

// Query selects records. ActionTrail matches every attribute given.
type Query struct {
	// Start and End bound the event time (End zero: now). LookupEvents searches the last
	// LookupWindow only: see ClampStart.
	Start, End time.Time
	// EventName, ResourceName (a KMS key ID), EventRW filter server-side when set.
	EventName, ResourceName, EventRW string
	// Max bounds the number of records returned over all pages (default DefaultMaxEvents).
	Max int
	// MaxPages bounds the number of pages read (default DefaultMaxPages).
	MaxPages int
}

// Lookuper finds ActionTrail records.
type Lookuper interface {
	LookupEvents(ctx context.Context, q Query) (Result, error)
}

// Result is what a lookup found.
type Result struct {
	// Events are the records found, newest first.
	Events []Event
	// Pages is the number of LookupEvents pages read.
	Pages int
	// Truncated reports that the lookup stopped at Query.Max records or Query.MaxPages pages while
	// ActionTrail still had more: Events holds the newest ones only.
	Truncated bool
}

// page is one LookupEvents answer.
type page struct {
	events []Event
	next   string
}

// fetchFunc reads the page token names ("" for the first), of at most size records.
type fetchFunc func(ctx context.Context, token string, size int) (page, error)

func (q Query) withDefaults(now time.Time) Query {
	if q.Max <= 0 {
		q.Max = DefaultMaxEvents
	}
	if q.MaxPages <= 0 {
		q.MaxPages = DefaultMaxPages
	}
	if q.End.IsZero() {
		q.End = now
	}
	return q
}

// attributes returns the server-side filters of q in a fixed order.
func (q Query) attributes() [][2]string {
	var out [][2]string
	for _, a := range [][2]string{{"EventName", q.EventName}, {"ResourceName", q.ResourceName}, {"EventRW", q.EventRW}} {
		if a[1] != "" {
			out = append(out, a)
		}
	}
	return out
}

// collect follows NextToken from the first page until ActionTrail has no more, q.Max records or
// q.MaxPages pages. q must have its defaults. On error it returns the pages read so far.
func collect(ctx context.Context, q Query, fetch fetchFunc) (Result, error) {
	var r Result
	if q.End.Before(q.Start) {
		return r, fmt.Errorf("actiontrail lookup events: start %s is after end %s", q.Start.UTC().Format(time.RFC3339), q.End.UTC().Format(time.RFC3339))
	}
	seen := map[string]bool{}
	token := ""
	for {
		if len(r.Events) >= q.Max || r.Pages >= q.MaxPages {
			r.Truncated = true
			return r, nil
		}
		if err := ctx.Err(); err != nil {
			return r, fmt.Errorf("actiontrail lookup events: %w", err)
		}
		p, err := fetch(ctx, token, min(maxPageSize, q.Max-len(r.Events)))
		if err != nil {
			return r, fmt.Errorf("actiontrail lookup events: page %d: %w", r.Pages+1, err)
		}
		r.Pages++
		if room := q.Max - len(r.Events); len(p.events) > room {
			r.Events = append(r.Events, p.events[:room]...)
			r.Truncated = true
			return r, nil
		}
		r.Events = append(r.Events, p.events...)
		if p.next == "" {
			return r, nil
		}
		if seen[p.next] {
			return r, fmt.Errorf("actiontrail lookup events: page %d repeats an earlier NextToken", r.Pages)
		}
		seen[p.next] = true
		token = p.next
	}
}

// decodePage decodes the records of one LookupEvents answer.
func decodePage(raw []map[string]any, next string) (page, error) {
	p := page{next: next, events: make([]Event, 0, len(raw))}
	for i, r := range raw {
		b, err := json.Marshal(r)
		if err != nil {
			return page{}, fmt.Errorf("event %d: %w", i, err)
		}
		e, err := Decode(b)
		if err != nil {
			return page{}, fmt.Errorf("event %d: %w", i, err)
		}
		p.events = append(p.events, e)
	}
	return p, nil
}
