package verify

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/replicas"
)

// ReplicaCoverage says which API server replicas served the convergence pass. Behind a load
// balancer each replica judges only the objects patched through it, so the pass proves convergence
// for the replicas that served part of it, and for no other.
type ReplicaCoverage struct {
	// Expected is the number of live API server replicas (0: not known; see Source).
	Expected int `json:"expected"`
	// Source says how Expected was learned, or why it is not known.
	Source string `json:"source"`
	// Covered are the replicas (ID hashes) that served part of the pass; Missing the expected ones
	// that served none of it.
	Covered []string `json:"covered"`
	Missing []string `json:"missing,omitempty"`
	// Rewrote counts per replica the objects it rewrote during the pass (a replica on another key
	// version than the one the objects are stored under rewrites them).
	Rewrote map[string]int64 `json:"rewrote,omitempty"`
	// Notes say what limits the attribution (routes re-dialled mid-pass, replicas not identified).
	Notes []string `json:"notes,omitempty"`
}

// Complete reports whether every replica is known and served part of the pass.
func (c ReplicaCoverage) Complete() bool {
	return c.Expected > 0 && len(c.Missing) == 0 && len(c.Covered) >= c.Expected
}

// Coverage works out which replicas served pass s, from its per-route counts (routes named by
// replica ID, package replicas) and set, the replicas the cluster has (nil: not known). A pass run
// without routes went through one connection: it covers a single-replica cluster only.
func Coverage(s reencrypt.Summary, set *replicas.Set) ReplicaCoverage {
	c := ReplicaCoverage{Source: "not known: no replica discovery was made"}
	var expected []replicas.Replica
	if set != nil {
		c.Source = set.Source
		c.Notes = append(c.Notes, set.Notes...)
		if set.Known() {
			expected = set.Expected
			c.Expected = len(expected)
		}
	}
	served := map[string]bool{}
	for _, r := range s.Routes {
		if r.Rewritten > 0 {
			if c.Rewrote == nil {
				c.Rewrote = map[string]int64{}
			}
			c.Rewrote[r.Route] += r.Rewritten
		}
		if r.Listed == 0 {
			continue
		}
		if set != nil && slices.Contains(set.Moved, r.Route) {
			c.Notes = append(c.Notes, fmt.Sprintf("the connection to replica %s reached another replica by the end of the pass: its share is credited to none", replicas.Short(r.Route)))
			continue
		}
		served[r.Route] = true
	}
	if len(s.Routes) == 0 && s.Total.Listed > 0 {
		served[replicas.Unidentified] = true
		c.Notes = append(c.Notes, "the pass went through one connection: one replica judged all of it")
	}
	// One expected replica: whatever connection the pass used reached it.
	if len(expected) == 1 && served[replicas.Unidentified] {
		delete(served, replicas.Unidentified)
		served[expected[0].ID] = true
	}
	for id := range served {
		c.Covered = append(c.Covered, id)
	}
	sort.Strings(c.Covered)
	for _, r := range expected {
		if !served[r.ID] {
			c.Missing = append(c.Missing, r.ID)
		}
	}
	return c
}

// shortList names replica IDs for a message.
func shortList(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = replicas.Short(id)
	}
	return orNone(strings.Join(out, ", "))
}

// rewroteList names the replicas that rewrote objects, with their counts.
func rewroteList(m map[string]int64) string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%s rewrote %d", replicas.Short(id), m[id])
	}
	return strings.Join(parts, ", ")
}
