package handler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/notify"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

// Delivery statuses of a notice (DecisionResult.Notified).
const (
	notifiedSent      = "sent"
	notifiedDuplicate = "duplicate"
	notifiedPending   = "pending"
	notifiedGaveUp    = "undeliverable"
)

// Outbox bounds: the timer's sweep gives up on a notice after MaxNoticeAttempts attempts or
// MaxNoticeAge, whichever comes first, and says so at error level.
const (
	MaxNoticeAttempts = 12
	MaxNoticeAge      = 24 * time.Hour
)

// deliver sends notice n about event ev at least once, and once only as far as the outboxes can
// tell: it claims the notice in the outbox of every reachable cluster it concerns (state.Store.Claim,
// in cluster order, so that concurrent senders meet on the first cluster), sends it, and records the
// outcome in each (Release). A notice already delivered, or held by another live sender, is not
// sent again ("duplicate"). When no outbox can be written the notice is sent all the same: an
// alert is worth a duplicate. A transient failure leaves it pending in the outboxes, where the
// timer's sweep (and Function Compute's retry of this invocation) sends it again; it returns the
// error. A permanent failure, or final, gives up on it, loudly.
func (h *base) deliver(ctx context.Context, o *opened, ev events.DedupKey, n policy.Notice, holder string, final bool, log *zerolog.Logger) (string, error) {
	stores := o.outboxes(n)
	var claimed []*state.Store
	for _, s := range stores {
		c, err := s.Claim(ctx, ev, n, holder)
		if err != nil {
			log.Warn().Err(err).Str("cluster", s.Cluster()).Str("event", ev.String()).Msg("outbox not written; the notice goes out all the same")
			continue
		}
		if c.Entry.Done() || !c.Claimed {
			h.unclaim(ctx, claimed, ev, holder, log)
			if c.Entry.Done() {
				h.release(ctx, stores, ev, n, holder, nil, false, log) // copies elsewhere learn it
				return notifiedDuplicate, nil
			}
			return notifiedDuplicate + ": another invocation (" + c.Entry.ClaimedBy + ") is sending it", nil
		}
		claimed = append(claimed, s)
	}
	err := h.send(ctx, n, log)
	var de *notify.DeliveryError
	permanent := err != nil && errors.As(err, &de) && !de.Temporary
	giveUp := err != nil && (permanent || final)
	h.release(ctx, stores, ev, n, holder, err, giveUp, log)
	switch {
	case err == nil:
		return notifiedSent, nil
	case giveUp:
		log.Error().Err(err).Str("event", ev.String()).Str("title", n.Title).Msg("notice given up: it was not delivered")
		return notifiedGaveUp + ": " + err.Error(), nil
	default:
		log.Error().Err(err).Str("event", ev.String()).Str("title", n.Title).
			Msg("notice not delivered yet: kept in the outbox, sent again by Function Compute's retry and the timer")
		return notifiedPending + ": " + err.Error(), fmt.Errorf("deliver the notice of event %s: %w", ev, err)
	}
}

// outboxes returns the stores of the reachable clusters the notice concerns, in cluster order, or
// of every reachable cluster when it names none of them.
func (o *opened) outboxes(n policy.Notice) []*state.Store {
	var out []*state.Store
	for _, id := range o.order {
		for _, c := range n.Clusters {
			if c == id {
				out = append(out, o.clusters[id].Store)
			}
		}
	}
	if len(out) == 0 {
		for _, id := range o.order {
			out = append(out, o.clusters[id].Store)
		}
	}
	return out
}

func (h *base) release(ctx context.Context, stores []*state.Store, ev events.DedupKey, n policy.Notice, holder string, sendErr error, giveUp bool, log *zerolog.Logger) {
	for _, s := range stores {
		if err := s.Release(ctx, ev, n, holder, sendErr, giveUp); err != nil {
			log.Warn().Err(err).Str("cluster", s.Cluster()).Str("event", ev.String()).Msg("outbox not updated")
		}
	}
}

func (h *base) unclaim(ctx context.Context, stores []*state.Store, ev events.DedupKey, holder string, log *zerolog.Logger) {
	for _, s := range stores {
		if err := s.Unclaim(ctx, ev, holder); err != nil {
			log.Warn().Err(err).Str("cluster", s.Cluster()).Str("event", ev.String()).Msg("outbox claim not released")
		}
	}
}

// sweep sends the notices still pending in the reachable outboxes (a sender that crashed, or a
// webhook that was down), giving up on those too old or tried too often. It returns what it did,
// one line per notice.
func (h *base) sweep(ctx context.Context, o *opened, holder string, log *zerolog.Logger) []string {
	now := h.deps.Clock.Now()
	seen := map[events.DedupKey]bool{}
	var out []string
	for _, id := range o.order {
		box, err := o.clusters[id].Store.Outbox(ctx)
		if err != nil {
			log.Warn().Err(err).Str("cluster", id).Msg("outbox not read")
			continue
		}
		for _, e := range box {
			if e.Done() || seen[e.Event] || (e.ClaimedBy != "" && now.Sub(e.ClaimedAt) < state.ClaimTTL) {
				continue
			}
			seen[e.Event] = true
			final := e.Attempts+1 >= MaxNoticeAttempts || now.Sub(e.Created) >= MaxNoticeAge
			status, _ := h.deliver(ctx, o, e.Event, e.Notice, holder, final, log)
			out = append(out, fmt.Sprintf("%s (%s): %s", e.Event, e.Notice.Title, status))
		}
	}
	return out
}
