package handler

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

// timerSource is the DedupKey source of the timer's own notices (no event behind them).
const timerSource = "rekey.timer"

// KeyNoticeRepeat is how often the timer repeats its critical notice while a key stays unusable.
const KeyNoticeRepeat = 24 * time.Hour

// watchKeys is the timer's backstop for the keys themselves, whether or not an event arrived: a
// watched key that is not Enabled (Disabled, PendingDeletion, its material missing, or gone) sends a
// critical notice, repeated at most every KeyNoticeRepeat while it lasts; a key usable again after
// that sends one recovery notice; a configured alias that now names another key is reported. What
// it saw is kept per key in every reachable cluster that uses it (state.KeySeen). It returns one line
// per notice.
func (h *base) watchKeys(ctx context.Context, o *opened, holder string, log *zerolog.Logger) []string {
	md, errs := h.describe(ctx)
	now := h.deps.Clock.Now()
	var out []string
	done := map[string]bool{}
	for _, t := range h.deps.Config.Targets {
		if done[t.Key] {
			continue
		}
		done[t.Key] = true
		var clusters []Cluster
		var names []string
		for _, u := range h.deps.Config.Targets {
			if u.Key != t.Key {
				continue
			}
			names = append(names, u.Cluster)
			if c, ok := o.clusters[u.Cluster]; ok {
				clusters = append(clusters, c)
			}
		}
		m, err := md[t.Key], errs[t.Key]
		switch {
		case err != nil && kms.IsKeyNotFound(err):
			m = kms.KeyMetadata{State: "NotFound"}
		case err != nil:
			continue // not known now: the version check reports it
		}
		prev, found := lastSeen(ctx, clusters, t.Key)
		seen := state.KeySeen{Key: t.Key, KeyID: m.KeyID, State: m.State, Since: now}
		if found && prev.KeyID != "" && m.KeyID != "" && prev.KeyID != m.KeyID {
			n := h.keyNotice(policy.Warning, t.Key, names, now)
			n.Title = fmt.Sprintf("WARNING: alias %s now names KMS key %s, not %s", t.Key, m.KeyID, prev.KeyID)
			n.Impact = fmt.Sprintf("the clusters %v are configured with %s: rekey now checks and re-encrypts under key %s. If the clusters still encrypt with %s, "+
				"set REKEY_TARGETS to that key ID", names, t.Key, m.KeyID, prev.KeyID)
			out = append(out, h.keyNoticeLine(ctx, o, events.DedupKey{Source: timerSource, ID: "alias/" + t.Key + "/" + m.KeyID}, n, holder, log))
		}
		switch {
		case m.State != kms.KeyStateEnabled:
			if found && prev.State == m.State && !prev.Notified.IsZero() && now.Sub(prev.Notified) < KeyNoticeRepeat {
				break // told already, less than a day ago
			}
			n := h.keyNotice(policy.Critical, t.Key, names, now)
			n.Title = fmt.Sprintf("CRITICAL: KMS key %s used by %d cluster(s) is %s", alicloud.Redact(t.Key), len(names), m.State)
			n.Impact = policy.StateImpact(m.State) + " (found by the timer's key check; repeated every " + KeyNoticeRepeat.String() + " while it lasts)"
			n.KeyState = m.State
			period := now.Unix() / int64(KeyNoticeRepeat/time.Second)
			line := h.keyNoticeLine(ctx, o, events.DedupKey{Source: timerSource, ID: fmt.Sprintf("key/%s/%s/%d", t.Key, m.State, period)}, n, holder, log)
			out = append(out, line)
			seen.Notified = now
		case found && prev.State != kms.KeyStateEnabled:
			n := h.keyNotice(policy.Info, t.Key, names, now)
			n.Title = fmt.Sprintf("Recovered: KMS key %s is Enabled again", alicloud.Redact(t.Key))
			n.Impact = fmt.Sprintf("the key was %s since %s; the API servers can use it again", prev.State, prev.Since.UTC().Format(time.RFC3339))
			n.KeyState = m.State
			out = append(out, h.keyNoticeLine(ctx, o, events.DedupKey{Source: timerSource, ID: fmt.Sprintf("key/%s/Enabled/%d", t.Key, prev.Since.Unix())}, n, holder, log))
		}
		for _, c := range clusters {
			if _, _, err := c.Store.SeeKey(ctx, seen); err != nil {
				log.Warn().Err(err).Str("cluster", c.ID).Msg("record the key's state")
			}
		}
	}
	return out
}

// lastSeen is the most recent record of key among the clusters.
func lastSeen(ctx context.Context, clusters []Cluster, key string) (state.KeySeen, bool) {
	var best state.KeySeen
	found := false
	for _, c := range clusters {
		ks, err := c.Store.Keys(ctx)
		if err != nil {
			continue
		}
		for _, k := range ks {
			if k.Key == key && (!found || k.Since.After(best.Since)) {
				best, found = k, true
			}
		}
	}
	return best, found
}

func (h *base) keyNotice(sev policy.Severity, key string, clusters []string, now time.Time) policy.Notice {
	return policy.Notice{Severity: sev, Key: alicloud.Redact(key), Clusters: clusters, Action: "timer key check", Actor: "rekey (no event needed)",
		Account: h.deps.Config.AccountID, Region: h.deps.Config.Region, Time: now}
}

func (h *base) keyNoticeLine(ctx context.Context, o *opened, ev events.DedupKey, n policy.Notice, holder string, log *zerolog.Logger) string {
	status, _ := h.deliver(ctx, o, ev, n, holder, false, log)
	return n.Title + ": " + status
}

// recordAlerted records, in the reachable clusters that use the key, the key state an event's
// delivered notice stated: after a critical notice (the key not Enabled) the timer's key check does
// not repeat it within the day; after a notice that found the key Enabled (EnableKey's recovery)
// the timer does not announce that recovery a second time.
func (h *base) recordAlerted(ctx context.Context, o *opened, n policy.Notice, log *zerolog.Logger) {
	if n.KeyState == "" || (n.KeyState != kms.KeyStateEnabled && n.Severity != policy.Critical) {
		return
	}
	now := h.deps.Clock.Now()
	notified := now
	if n.KeyState == kms.KeyStateEnabled {
		notified = time.Time{}
	}
	for _, id := range n.Clusters {
		c, ok := o.clusters[id]
		t, configured := h.deps.Config.Target(id)
		if !ok || !configured {
			continue
		}
		if _, _, err := c.Store.SeeKey(ctx, state.KeySeen{Key: t.Key, State: n.KeyState, Since: now, Notified: notified}); err != nil {
			log.Warn().Err(err).Str("cluster", id).Msg("record the key's state")
		}
	}
}
