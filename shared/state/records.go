package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

// JobRecord is a pending job as stored: the policy's job plus its identity and origin.
type JobRecord struct {
	policy.Job
	// ID identifies the job: JobID(Cluster, Key, Version). It names the job's checkpoint.
	ID string `json:"id"`
	// Event is the event that asked for the job (zero for jobs found by the timer's version check).
	Event events.DedupKey `json:"event"`
	// Created is when the job was first recorded.
	Created time.Time `json:"created"`
	// Attempts counts the runs that ended failed or suspicious (Store.Defer); LastOutcome is the
	// last of them ("failed: ..."), at LastOutcomeAt.
	Attempts      int       `json:"attempts,omitempty"`
	LastOutcome   string    `json:"lastOutcome,omitempty"`
	LastOutcomeAt time.Time `json:"lastOutcomeAt,omitzero"`
}

// Verified is the last key version fully re-encrypted and verified for a cluster's key.
type Verified struct {
	Cluster string `json:"cluster"`
	Key     string `json:"key"`
	Version string `json:"version"`
	// At is when the job that verified it completed.
	At time.Time `json:"at"`
}

// HandledEvent is an event already decided on, kept to drop EventBridge's redeliveries.
type HandledEvent struct {
	events.DedupKey
	// At is when it was first recorded.
	At time.Time `json:"at"`
}

// JobID returns the ID of the job that brings cluster's key to version ("" = the primary version
// at run time): the same cluster, key and version always give the same ID, so recording a job
// twice is one job. The ID is a DNS label.
func JobID(cluster, key, version string) string {
	sum := sha256.Sum256([]byte(cluster + "\x00" + key + "\x00" + version))
	return "j" + hex.EncodeToString(sum[:8])
}

// Data keys of the state ConfigMap.
const (
	keyFormat   = "format"
	keyVerified = "verified.json"
	keyJobs     = "jobs.json"
	keyHandled  = "handled.json"
	keyOutbox   = "outbox.json"
	keyKeys     = "keys.json"
	formatV1    = "rekey-state/v1"
)

// document is the content of the state ConfigMap.
type document struct {
	Verified []Verified
	Jobs     []JobRecord
	Handled  []HandledEvent
	Outbox   []OutboxEntry
	Keys     []KeySeen
}

func decodeState(cm *corev1.ConfigMap) (document, error) {
	var d document
	if cm == nil {
		return d, nil
	}
	if f := cm.Data[keyFormat]; f != "" && f != formatV1 {
		return d, fmt.Errorf("configmap %s/%s: format %q, want %q (written by a newer rekey?)", cm.Namespace, cm.Name, f, formatV1)
	}
	for key, into := range map[string]any{keyVerified: &d.Verified, keyJobs: &d.Jobs, keyHandled: &d.Handled, keyOutbox: &d.Outbox, keyKeys: &d.Keys} {
		raw := cm.Data[key]
		if raw == "" {
			continue
		}
		if err := json.Unmarshal([]byte(raw), into); err != nil {
			return d, fmt.Errorf("configmap %s/%s: %s: %w", cm.Namespace, cm.Name, key, err)
		}
	}
	return d, nil
}

func (d document) encode() (map[string]string, error) {
	out := map[string]string{keyFormat: formatV1}
	for key, v := range map[string]any{keyVerified: d.Verified, keyJobs: d.Jobs, keyHandled: d.Handled, keyOutbox: d.Outbox, keyKeys: d.Keys} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", key, err)
		}
		out[key] = string(b)
	}
	return out, nil
}

func (d *document) verified(cluster, key string) (string, bool) {
	for _, v := range d.Verified {
		if v.Cluster == cluster && v.Key == key {
			return v.Version, true
		}
	}
	return "", false
}

func (d *document) setVerified(v Verified) {
	for i := range d.Verified {
		if d.Verified[i].Cluster == v.Cluster && d.Verified[i].Key == v.Key {
			d.Verified[i] = v
			return
		}
	}
	d.Verified = append(d.Verified, v)
}

func (d *document) job(id string) (JobRecord, bool) {
	for _, j := range d.Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return JobRecord{}, false
}

func (d *document) handled(k events.DedupKey) bool {
	for _, h := range d.Handled {
		if h.DedupKey == k {
			return true
		}
	}
	return false
}

// prune drops handled events older than ttl and keeps the newest limit.
func (d *document) prune(now time.Time, limit int, ttl time.Duration) {
	kept := d.Handled[:0]
	for _, h := range d.Handled {
		if now.Sub(h.At) <= ttl {
			kept = append(kept, h)
		}
	}
	sort.SliceStable(kept, func(i, j int) bool { return kept[i].At.Before(kept[j].At) })
	if len(kept) > limit {
		kept = kept[len(kept)-limit:]
	}
	d.Handled = kept
	d.pruneOutbox(now)
}
