package adoption

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/apimetrics"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// metrics proves adoption from Confirmations consecutive /metrics scrapes in which every API server
// seen reports the adopted key as its most recent Status key (and wrote with no other key after
// that Status call), with every API server seen during the wait on it in its latest scrape.
//
// The adopted key is sha256(primary) when the KMS plugin reports the version ID as its key_id
// (rekey's plugin). Plugins that report another key_id format (ACK's is not documented) never show
// that hash; then a replica counts as adopted when its key-ID hash moved to a new value: away from
// Gate.PreviousKeyIDHash (the hash rekey recorded when it verified the previous version), or from
// another hash this gate saw it report, or from a hash its Status reported after the rotation
// (Gate.RotatedAt). Every replica must have moved, and to the same new hash. When no replica ever
// reports sha256(primary) and none is seen moving within MetricsGiveUp (and at least
// minMetricsScrapes scrapes), the series cannot prove anything and the gate goes on to the next
// kind of evidence, saying why.
func (r *run) metrics(ctx context.Context) (Evidence, error) {
	if r.g.Metrics == nil {
		return Evidence{}, unavailable("/metrics is not readable (no client)")
	}
	want := apimetrics.HashKeyID(r.primary)
	prev := r.prevHash
	latest := map[string]string{} // API server ID hash -> its latest key-ID hash, in its latest scrape
	stale := map[string]bool{}    // ... wrote with another key after that Status call
	moved := map[string]bool{}    // ... was seen on another key ID before its latest one
	matched := false              // some replica reported sha256(primary)
	var ev Evidence
	var target string
	streak, first := 0, true
	err := r.poll(ctx, func(ctx context.Context) (bool, bool, error) {
		wasFirst := first
		first = false
		ev.Samples++
		cctx, cancel := r.call(ctx)
		snap, err := r.g.Metrics.Scrape(cctx)
		cancel()
		if err != nil {
			streak = 0
			if wasFirst {
				if errors.Is(err, apimetrics.ErrForbidden) {
					return false, false, unavailable("%v (grant get on nonResourceURLs /metrics)", err)
				}
				return false, false, unavailable("%v", err)
			}
			return false, false, err
		}
		reps := snap.Replicas(r.g.Provider)
		if len(reps) == 0 {
			streak = 0
			if len(latest) == 0 {
				return false, false, unavailable("/metrics has no KMS v2 key-ID series (%s): no KMS v2 provider, or a server too old", apimetrics.StatusMetric)
			}
			r.last = "a scrape of /metrics had no KMS v2 key-ID series"
			return false, false, nil
		}
		for _, x := range reps {
			id := x.APIServerIDHash
			switch {
			case x.KeyIDHash == want:
				matched = true
			case r.primaryHash != "" && x.KeyIDHash == r.primaryHash:
				// The hash recorded for the primary when it was proved before (a re-run).
				want, matched = r.primaryHash, true
			}
			if old, ok := latest[id]; ok && old != x.KeyIDHash {
				moved[id] = true
			}
			if prev != "" && x.KeyIDHash != prev {
				moved[id] = true
			}
			if r.movedAfterRotation(snap, x) {
				moved[id] = true
			}
			latest[id], stale[id] = x.KeyIDHash, x.StaleWriteHash != ""
		}
		target = r.adoptedHash(want, matched, latest, moved)
		var lagging []string
		for id, h := range latest {
			switch {
			case matched && (h != want || stale[id]):
				lagging = append(lagging, shortHash(id))
			case !matched && (!moved[id] || h == prev || stale[id]):
				lagging = append(lagging, shortHash(id))
			}
		}
		if len(lagging) > 0 || target == "" {
			streak = 0
			sort.Strings(lagging)
			r.last = r.laggingMessage(lagging, matched, target)
			r.g.Log.Debug().Strs("lagging", lagging).Int("replicas", len(latest)).Int("moved", len(moved)).Bool("matched", matched).
				Bool("previousHashKnown", prev != "").Msg("metrics: " + r.last)
			if r.metricsGiveUp(matched, len(moved) > 0, ev.Samples) {
				return false, false, unavailable("the API servers' KMS key-ID hashes never equal sha256(key version %s) and not every replica could be shown moving to a new key ID (%d scrapes in %s; last: %s): "+
					"the KMS plugin reports another key_id format, and %s", r.primary, ev.Samples, r.g.Clock.Since(r.start).Round(time.Second), r.last, r.giveUpWhy())
			}
			return false, false, nil
		}
		streak++
		ev.Confirmations = streak
		return true, streak >= r.g.Confirmations, nil
	})
	if err != nil {
		return Evidence{}, err
	}
	ev.Replicas, ev.Direct, ev.KeyIDHash = len(latest), true, target
	if matched {
		ev.Detail = fmt.Sprintf("%d consecutive /metrics scrapes: all %d API server(s) seen report key version %s from their latest KMS Status call", ev.Confirmations, len(latest), r.primary)
		if target != apimetrics.HashKeyID(r.primary) {
			ev.Detail += " (the key-ID hash recorded when it was proved before)"
		}
		return ev, nil
	}
	ev.Detail = fmt.Sprintf("%d consecutive /metrics scrapes: all %d API server(s) seen moved their KMS key ID to one new value (%s) after the rotation to key version %s",
		ev.Confirmations, len(latest), shortHash(target), r.primary)
	ev.Notes = append(ev.Notes, "the KMS plugin's key_id is not the key version ID (no series equals sha256 of it): adoption was judged by every replica's key-ID hash moving to one new value")
	return ev, nil
}

// minMetricsScrapes is the fewest scrapes after which the metrics kind may give up.
const minMetricsScrapes = 10

// metricsGiveUp decides whether the series can prove nothing and the gate should go on to the next
// kind. With sha256(primary) seen, or the hash of the previous version known, every replica's move
// will show (or its absence names the replicas that lag): never give up. On a baseline no move is
// coming: only equality can prove, so give up as soon as enough scrapes showed none. Otherwise
// moves can be seen only as they happen (or from a Status reported after the rotation): a replica
// that moved before the gate's first scrape cannot be shown to have moved, so after MetricsGiveUp
// without proof the series give way.
func (r *run) metricsGiveUp(matched, anyMoved bool, samples int) bool {
	if matched || r.prevHash != "" {
		return false
	}
	if r.g.Baseline {
		return !anyMoved && samples >= minBaselineScrapes
	}
	return samples >= minMetricsScrapes && r.g.Clock.Since(r.start) >= r.g.MetricsGiveUp
}

// minBaselineScrapes is the fewest scrapes after which a baseline gives up on the series (a few, to
// see more than one replica: only equality can prove there).
const minBaselineScrapes = 4

// giveUpWhy says why the metrics kind had nothing to compare with.
func (r *run) giveUpWhy() string {
	if r.g.Baseline {
		return "no rotation was observed to see a move (a baseline job)"
	}
	return fmt.Sprintf("no hash is recorded for the previous version to compare with (a replica that moved before the gate started cannot be shown to have moved) within %s", r.g.MetricsGiveUp)
}

// adoptedHash is the key-ID hash that adoption means: sha256(primary) once any replica showed it;
// otherwise the one hash every replica moved to ("" while they disagree or have not all moved).
func (r *run) adoptedHash(want string, matched bool, latest map[string]string, moved map[string]bool) string {
	if matched {
		return want
	}
	target := ""
	for id, h := range latest {
		if !moved[id] || h == r.prevHash {
			return ""
		}
		if target != "" && h != target {
			return ""
		}
		target = h
	}
	return target
}

// movedAfterRotation reports whether x's API server reported another key-ID hash after the
// rotation (Gate.RotatedAt) and before its latest one: it was on another key then, and moved.
func (r *run) movedAfterRotation(snap apimetrics.Snapshot, x apimetrics.Replica) bool {
	if r.g.RotatedAt.IsZero() {
		return false
	}
	at := float64(r.g.RotatedAt.Unix())
	for _, s := range snap.Status {
		if s.APIServerIDHash == x.APIServerIDHash && s.Provider == x.Provider && s.KeyIDHash != x.KeyIDHash && s.Timestamp >= at && s.Timestamp <= x.StatusAt {
			return true
		}
	}
	return false
}

// laggingMessage says which replicas do not confirm adoption yet.
func (r *run) laggingMessage(lagging []string, matched bool, target string) string {
	switch {
	case matched:
		return fmt.Sprintf("API server(s) %s not yet on key version %s (%s)", strings.Join(lagging, ", "), r.primary, storedvalue.HashKeyID(r.primary))
	case target == "" && len(lagging) == 0:
		return "the API servers' key-ID hashes disagree"
	default:
		return fmt.Sprintf("API server(s) %s have not moved to a new KMS key ID since the rotation to key version %s (the plugin's key_id is not the version ID)",
			strings.Join(lagging, ", "), r.primary)
	}
}

// adoptedReplicas says per API server whether one of its KMS v2 providers is on the key whose hash
// is want (and wrote with no other key after learning it). Providers of other keys are ignored.
func adoptedReplicas(rs []apimetrics.Replica, want string) map[string]bool {
	out := map[string]bool{}
	for _, x := range rs {
		ok := x.KeyIDHash == want && x.StaleWriteHash == ""
		out[x.APIServerIDHash] = out[x.APIServerIDHash] || ok
	}
	return out
}

// shortHash shortens "sha256:<64 hex>" for messages.
func shortHash(h string) string {
	if len(h) > len("sha256:")+12 {
		return h[:len("sha256:")+12]
	}
	return h
}

// learnKeyIDHash samples /metrics after adoption was proved and returns the key-ID hash every API
// server seen reports as its latest ("" when they disagree, or /metrics cannot be read): the hash
// of the primary, whatever the plugin's key_id format.
func (r *run) learnKeyIDHash(ctx context.Context) string {
	if r.g.Metrics == nil {
		return ""
	}
	hash := ""
	for range 6 {
		cctx, cancel := r.call(ctx)
		snap, err := r.g.Metrics.Scrape(cctx)
		cancel()
		if err != nil {
			return ""
		}
		for _, x := range snap.Replicas(r.g.Provider) {
			if x.StaleWriteHash != "" || (hash != "" && x.KeyIDHash != hash) {
				return ""
			}
			hash = x.KeyIDHash
		}
	}
	return hash
}
