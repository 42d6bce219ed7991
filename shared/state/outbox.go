package state

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

// The outbox keeps every notice until it is delivered, so that no alert is lost to a crash or a
// webhook that is down: a notice is written to the outbox of each cluster it concerns (each one
// reachable) before it is sent, and marked delivered after. A sender claims the entry first (Claim),
// so that concurrent deliveries of one event send it once; a claim that is not released (the
// sender crashed) expires after ClaimTTL, and whoever comes next (the Function Compute retry, or
// the timer's sweep) sends it. Entries are deduplicated by event (events.DedupKey).

// Bounds of the outbox.
const (
	// ClaimTTL is how long a sender's claim on an entry holds without being released.
	ClaimTTL = 2 * time.Minute
	// OutboxTTL is how long delivered and given-up entries are kept (deduplication of late
	// redeliveries).
	OutboxTTL = 7 * 24 * time.Hour
	// OutboxLimit bounds the entries kept.
	OutboxLimit = 200
)

// OutboxEntry is one notice and what became of it.
type OutboxEntry struct {
	// Event identifies the notice: the event it is about (or a synthetic key for the timer's
	// notices).
	Event  events.DedupKey `json:"event"`
	Notice policy.Notice   `json:"notice"`
	// Created is when it was first written here.
	Created time.Time `json:"created"`
	// Attempts counts delivery attempts; LastError is the last failure.
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"lastError,omitempty"`
	// ClaimedBy and ClaimedAt name the sender working on it (empty when free).
	ClaimedBy string    `json:"claimedBy,omitempty"`
	ClaimedAt time.Time `json:"claimedAt,omitzero"`
	// Delivered is when the webhook accepted it; GaveUp is when the senders gave up on it.
	Delivered time.Time `json:"delivered,omitzero"`
	GaveUp    time.Time `json:"gaveUp,omitzero"`
}

// Done reports whether nothing is left to do for the entry.
func (e OutboxEntry) Done() bool { return !e.Delivered.IsZero() || !e.GaveUp.IsZero() }

// claimable reports whether holder may claim the entry at now.
func (e OutboxEntry) claimable(holder string, now time.Time) bool {
	return !e.Done() && (e.ClaimedBy == "" || e.ClaimedBy == holder || now.Sub(e.ClaimedAt) >= ClaimTTL)
}

func (d *document) outboxEntry(ev events.DedupKey) (*OutboxEntry, bool) {
	for i := range d.Outbox {
		if d.Outbox[i].Event == ev {
			return &d.Outbox[i], true
		}
	}
	return nil, false
}

// pruneOutbox drops finished entries older than OutboxTTL and keeps at most OutboxLimit, oldest
// finished first.
func (d *document) pruneOutbox(now time.Time) {
	kept := d.Outbox[:0]
	for _, e := range d.Outbox {
		if e.Done() && now.Sub(e.Created) > OutboxTTL {
			continue
		}
		kept = append(kept, e)
	}
	sort.SliceStable(kept, func(i, j int) bool {
		if kept[i].Done() != kept[j].Done() {
			return kept[i].Done() // finished entries first: they go first
		}
		return kept[i].Created.Before(kept[j].Created)
	})
	if len(kept) > OutboxLimit {
		kept = kept[len(kept)-OutboxLimit:]
	}
	d.Outbox = kept
}

// Claim is the outcome of Store.Claim.
type Claim struct {
	// Entry is the entry as stored after the call.
	Entry OutboxEntry
	// Claimed is true when the caller now holds the entry and must send it (then Release it).
	Claimed bool
	// Created is true when this call wrote the entry.
	Created bool
}

// Claim writes the notice of event ev to the outbox when it is not there yet, and claims it for
// holder unless it is done or another live sender holds it.
func (s *Store) Claim(ctx context.Context, ev events.DedupKey, n policy.Notice, holder string) (Claim, error) {
	var out Claim
	err := s.modify(ctx, func(d *document) (bool, error) {
		out = Claim{}
		now := s.clock.Now()
		e, ok := d.outboxEntry(ev)
		if !ok {
			d.Outbox = append(d.Outbox, OutboxEntry{Event: ev, Notice: n, Created: now})
			e, out.Created = &d.Outbox[len(d.Outbox)-1], true
		}
		if !e.claimable(holder, now) {
			out.Entry = *e
			return out.Created, nil
		}
		e.ClaimedBy, e.ClaimedAt = holder, now
		out.Entry, out.Claimed = *e, true
		return true, nil
	})
	if err != nil {
		return Claim{}, fmt.Errorf("claim notice of event %s in cluster %s: %w", ev, s.cluster, err)
	}
	return out, nil
}

// Release records the outcome of holder's delivery attempt of event ev's notice and frees the
// entry: delivered (deliveryErr nil), failed to be tried again, or given up (giveUp). Another
// holder's claim is left alone. A missing entry is written (a copy the sender could not write
// before), so that every cluster's outbox knows the notice was delivered.
func (s *Store) Release(ctx context.Context, ev events.DedupKey, n policy.Notice, holder string, deliveryErr error, giveUp bool) error {
	err := s.modify(ctx, func(d *document) (bool, error) {
		now := s.clock.Now()
		e, ok := d.outboxEntry(ev)
		if !ok {
			d.Outbox = append(d.Outbox, OutboxEntry{Event: ev, Notice: n, Created: now})
			e = &d.Outbox[len(d.Outbox)-1]
		}
		if e.Done() {
			return !ok, nil
		}
		if e.ClaimedBy != "" && e.ClaimedBy != holder && now.Sub(e.ClaimedAt) < ClaimTTL {
			return !ok, nil
		}
		e.Attempts++
		e.ClaimedBy, e.ClaimedAt = "", time.Time{}
		switch {
		case deliveryErr == nil:
			e.Delivered, e.LastError = now, ""
		case giveUp:
			e.GaveUp, e.LastError = now, deliveryErr.Error()
		default:
			e.LastError = deliveryErr.Error()
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("release notice of event %s in cluster %s: %w", ev, s.cluster, err)
	}
	return nil
}

// Outbox returns the outbox entries, oldest first.
func (s *Store) Outbox(ctx context.Context) ([]OutboxEntry, error) {
	_, d, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	out := append([]OutboxEntry(nil), d.Outbox...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Unclaim frees holder's claim on event ev's notice without counting an attempt (the holder did not
// send it: another sender had it).
func (s *Store) Unclaim(ctx context.Context, ev events.DedupKey, holder string) error {
	err := s.modify(ctx, func(d *document) (bool, error) {
		e, ok := d.outboxEntry(ev)
		if !ok || e.ClaimedBy != holder {
			return false, nil
		}
		e.ClaimedBy, e.ClaimedAt = "", time.Time{}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("unclaim notice of event %s in cluster %s: %w", ev, s.cluster, err)
	}
	return nil
}
