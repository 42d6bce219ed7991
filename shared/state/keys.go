package state

import (
	"context"
	"fmt"
	"time"
)

// KeySeen is what the timer's key check last saw of a configured key: its resolved ID and state,
// and when it last sent a notice about that state. It lets the timer alert once a day at most
// while a key stays unusable, send one recovery notice when it is usable again, and report an alias
// that moved to another key.
type KeySeen struct {
	// Key is the key as configured (ID, alias or ARN); KeyID what it resolved to.
	Key   string `json:"key"`
	KeyID string `json:"keyId,omitempty"`
	// State is the key's state (Enabled, Disabled, PendingDeletion, ...), Since when it was first
	// seen in it.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Notified is when a notice about State was last sent (zero: none).
	Notified time.Time `json:"notified,omitzero"`
}

// SeeKey records what the key check saw of k.Key and returns what was recorded before (zero, false
// when nothing was). Since is kept while the state does not change; Notified is taken from k when
// set, kept while the state does not change, cleared when it does.
func (s *Store) SeeKey(ctx context.Context, k KeySeen) (KeySeen, bool, error) {
	var prev KeySeen
	var found bool
	err := s.modify(ctx, func(d *document) (bool, error) {
		prev, found = KeySeen{}, false
		for i := range d.Keys {
			if d.Keys[i].Key != k.Key {
				continue
			}
			prev, found = d.Keys[i], true
			next := k
			if next.KeyID == "" {
				next.KeyID = prev.KeyID // a record without the key ID (an event's notice) keeps the known one
			}
			if prev.State == k.State {
				next.Since = prev.Since
				if next.Notified.IsZero() {
					next.Notified = prev.Notified
				}
			}
			if next == prev {
				return false, nil
			}
			d.Keys[i] = next
			return true, nil
		}
		d.Keys = append(d.Keys, k)
		return true, nil
	})
	if err != nil {
		return KeySeen{}, false, fmt.Errorf("record key %s in cluster %s: %w", k.Key, s.cluster, err)
	}
	return prev, found, nil
}

// Keys returns what the key check recorded.
func (s *Store) Keys(ctx context.Context) ([]KeySeen, error) {
	_, d, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	return append([]KeySeen(nil), d.Keys...), nil
}
