package actiontrail

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeTrail serves pages of n records each named "e<i>", pageSize records per page at most (the
// smaller of its own size and the size asked), with a NextToken while records remain.
type fakeTrail struct {
	total    int
	pageSize int
	// tokenFor overrides the NextToken after the page that ends at record i.
	tokenFor func(i int) string
	// failAt makes the n-th fetch (from 1) fail.
	failAt int
	calls  []fakeCall
}

type fakeCall struct {
	token string
	size  int
}

func (f *fakeTrail) fetch(_ context.Context, token string, size int) (page, error) {
	f.calls = append(f.calls, fakeCall{token, size})
	if len(f.calls) == f.failAt {
		return page{}, errors.New("throttled")
	}
	from := 0
	if token != "" {
		if _, err := fmt.Sscanf(token, "after-%d", &from); err != nil {
			return page{}, fmt.Errorf("bad token %q", token)
		}
	}
	n := min(size, f.pageSize, f.total-from)
	p := page{}
	for i := from; i < from+n; i++ {
		p.events = append(p.events, Event{EventID: fmt.Sprintf("e%d", i), EventName: "Decrypt"})
	}
	if end := from + n; end < f.total {
		p.next = fmt.Sprintf("after-%d", end)
		if f.tokenFor != nil {
			p.next = f.tokenFor(end)
		}
	}
	return p, nil
}

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func query(max, maxPages int) Query {
	return Query{Start: now.Add(-time.Hour), Max: max, MaxPages: maxPages}.withDefaults(now)
}

func TestCollectFollowsNextToken(t *testing.T) {
	f := &fakeTrail{total: 120, pageSize: 50}
	r, err := collect(t.Context(), query(0, 0), f.fetch)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 120 || r.Pages != 3 || r.Truncated {
		t.Fatalf("got %d events in %d pages (truncated %v), want 120 in 3, complete", len(r.Events), r.Pages, r.Truncated)
	}
	for i, e := range r.Events {
		if e.EventID != fmt.Sprintf("e%d", i) {
			t.Fatalf("event %d is %s: pages out of order or repeated", i, e.EventID)
		}
	}
	want := []fakeCall{{"", 50}, {"after-50", 50}, {"after-100", 50}}
	if fmt.Sprint(f.calls) != fmt.Sprint(want) {
		t.Fatalf("calls %v, want %v", f.calls, want)
	}
}

func TestCollectShortPagesWithToken(t *testing.T) {
	// ActionTrail may answer fewer records than asked (filters apply after paging) and still give
	// a token: keep going.
	f := &fakeTrail{total: 25, pageSize: 10}
	r, err := collect(t.Context(), query(0, 0), f.fetch)
	if err != nil || len(r.Events) != 25 || r.Pages != 3 || r.Truncated {
		t.Fatalf("got %d events in %d pages (truncated %v), %v; want 25 in 3", len(r.Events), r.Pages, r.Truncated, err)
	}
}

func TestCollectCaps(t *testing.T) {
	tests := []struct {
		name           string
		total, size    int
		max, maxPages  int
		events, pages  int
		truncated      bool
		lastAskedBelow int // the size asked on the last call, when the cap on records shrinks it
	}{
		{"max records", 500, 50, 120, 0, 120, 3, true, 20},
		{"max records exactly at the end", 120, 50, 120, 0, 120, 3, false, 20},
		{"max pages", 500, 50, 0, 4, 200, 4, true, 50},
		{"max pages exactly at the end", 200, 50, 0, 4, 200, 4, false, 50},
		{"default caps", 1e6, 50, 0, 0, DefaultMaxEvents, DefaultMaxEvents / 50, true, 50},
		{"default page cap with short pages", 1e6, 10, 0, 0, DefaultMaxPages * 10, DefaultMaxPages, true, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeTrail{total: tt.total, pageSize: tt.size}
			r, err := collect(t.Context(), query(tt.max, tt.maxPages), f.fetch)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Events) != tt.events || r.Pages != tt.pages || r.Truncated != tt.truncated {
				t.Fatalf("got %d events in %d pages (truncated %v), want %d in %d (truncated %v)",
					len(r.Events), r.Pages, r.Truncated, tt.events, tt.pages, tt.truncated)
			}
			if len(f.calls) != tt.pages {
				t.Fatalf("%d fetches for %d pages", len(f.calls), tt.pages)
			}
			if got := f.calls[len(f.calls)-1].size; got != tt.lastAskedBelow {
				t.Fatalf("last page asked for %d records, want %d", got, tt.lastAskedBelow)
			}
		})
	}
}

func TestCollectOversizedPageIsTrimmed(t *testing.T) {
	fetch := func(context.Context, string, int) (page, error) {
		return page{events: make([]Event, 80), next: ""}, nil
	}
	r, err := collect(t.Context(), query(30, 0), fetch)
	if err != nil || len(r.Events) != 30 || !r.Truncated {
		t.Fatalf("got %d events (truncated %v), %v; want 30, truncated", len(r.Events), r.Truncated, err)
	}
}

func TestCollectErrors(t *testing.T) {
	t.Run("page error keeps what was read", func(t *testing.T) {
		f := &fakeTrail{total: 200, pageSize: 50, failAt: 3}
		r, err := collect(t.Context(), query(0, 0), f.fetch)
		if err == nil || !strings.Contains(err.Error(), "page 3") || !strings.Contains(err.Error(), "throttled") {
			t.Fatalf("err %v, want page 3 throttled", err)
		}
		if len(r.Events) != 100 || r.Pages != 2 {
			t.Fatalf("partial result %d events %d pages, want 100 in 2", len(r.Events), r.Pages)
		}
	})
	t.Run("repeated token", func(t *testing.T) {
		f := &fakeTrail{total: 500, pageSize: 50, tokenFor: func(int) string { return "after-50" }}
		_, err := collect(t.Context(), query(0, 0), f.fetch)
		if err == nil || !strings.Contains(err.Error(), "repeats an earlier NextToken") {
			t.Fatalf("err %v, want a repeated token error", err)
		}
		if len(f.calls) != 2 {
			t.Fatalf("%d fetches, want 2 (stop at the first repeat)", len(f.calls))
		}
	})
	t.Run("start after end", func(t *testing.T) {
		f := &fakeTrail{total: 1, pageSize: 50}
		q := Query{Start: now, End: now.Add(-time.Minute)}.withDefaults(now)
		if _, err := collect(t.Context(), q, f.fetch); err == nil || len(f.calls) != 0 {
			t.Fatalf("err %v after %d calls, want an error before any call", err, len(f.calls))
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		f := &fakeTrail{total: 1, pageSize: 50}
		if _, err := collect(ctx, query(0, 0), f.fetch); !errors.Is(err, context.Canceled) || len(f.calls) != 0 {
			t.Fatalf("err %v after %d calls, want context.Canceled before any call", err, len(f.calls))
		}
	})
}

func TestDecodePage(t *testing.T) {
	raw := []map[string]any{
		{"eventId": "1", "eventName": "Encrypt", "userIdentity": map[string]any{"type": "ram-user", "userName": "alice"}},
		{"eventId": "2", "eventName": "Decrypt", "responseElements": map[string]any{"KeyVersionId": "v2"}},
	}
	p, err := decodePage(raw, "tok")
	if err != nil || len(p.events) != 2 || p.next != "tok" {
		t.Fatalf("decodePage = %+v, %v", p, err)
	}
	if p.events[0].UserIdentity.RAMUserName() != "alice" || p.events[1].Response("KeyVersionId") != "v2" {
		t.Fatalf("decoded %+v", p.events)
	}
	if _, err := decodePage([]map[string]any{{"eventId": "3"}}, ""); err == nil || !strings.Contains(err.Error(), "event 0") {
		t.Fatalf("a record without eventName: %v", err)
	}
}

func TestClampStart(t *testing.T) {
	if got, clamped := ClampStart(now.Add(-24*time.Hour), now); clamped || !got.Equal(now.Add(-24*time.Hour)) {
		t.Fatalf("a day back: %s %v", got, clamped)
	}
	if got, clamped := ClampStart(now.Add(-200*24*time.Hour), now); !clamped || !got.Equal(now.Add(-LookupWindow)) {
		t.Fatalf("200 days back: %s %v, want %s clamped", got, clamped, now.Add(-LookupWindow))
	}
}

func TestIdentityNames(t *testing.T) {
	user := Identity{Type: "ram-user", UserName: "alice"}
	role := Identity{Type: "assumed-role", UserName: "sess", Session: &SessionContext{}}
	role.Session.SessionIssuer.UserName = "r1"
	if user.RAMUserName() != "alice" || user.RoleName() != "" || role.RAMUserName() != "" || role.RoleName() != "r1" {
		t.Fatalf("user %q/%q role %q/%q", user.RAMUserName(), user.RoleName(), role.RAMUserName(), role.RoleName())
	}
}
