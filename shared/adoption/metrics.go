package adoption

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/rekey-dev/rekey/shared/apimetrics"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// metrics proves adoption from Confirmations consecutive /metrics scrapes in which every API server
// seen reports the primary's hash as its most recent Status key, with every API server seen during
// the wait on the primary in its latest scrape.
func (r *run) metrics(ctx context.Context) (Evidence, error) {
	if r.g.Metrics == nil {
		return Evidence{}, unavailable("/metrics is not readable (no client)")
	}
	want := apimetrics.HashKeyID(r.primary)
	seen := map[string]bool{} // API server ID hash -> on the primary in its latest scrape
	var ev Evidence
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
		replicas := adoptedReplicas(snap.Replicas(r.g.Provider), want)
		if len(replicas) == 0 {
			streak = 0
			if len(seen) == 0 {
				return false, false, unavailable("/metrics has no KMS v2 key-ID series (%s): no KMS v2 provider, or a server too old", apimetrics.StatusMetric)
			}
			r.last = "a scrape of /metrics had no KMS v2 key-ID series"
			return false, false, nil
		}
		all := true
		var lagging []string
		for id, ok := range replicas {
			seen[id] = ok
			if !ok {
				all = false
				lagging = append(lagging, shortHash(id))
			}
		}
		if !all {
			streak = 0
			sort.Strings(lagging)
			r.last = fmt.Sprintf("API server(s) %s not yet on key version %s (%s)", strings.Join(lagging, ", "), r.primary, storedvalue.HashKeyID(r.primary))
			return false, false, nil
		}
		streak++
		ev.Confirmations = streak
		for id, ok := range seen {
			if !ok {
				r.last = fmt.Sprintf("API server %s was last seen on another key version", shortHash(id))
				return true, false, nil
			}
		}
		return true, streak >= r.g.Confirmations, nil
	})
	if err != nil {
		return Evidence{}, err
	}
	ev.Replicas, ev.Direct = len(seen), true
	ev.Detail = fmt.Sprintf("%d consecutive /metrics scrapes: all %d API server(s) seen report key version %s from their latest KMS Status call", ev.Confirmations, len(seen), r.primary)
	return ev, nil
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
