package state

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

// Recorded is what Record changed.
type Recorded struct {
	// First is true when this call recorded the decision's event as handled (Store.Record; a Fleet
	// does not say: notices are deduplicated by the outbox).
	First bool `json:"first,omitempty"`
	// Added are the jobs this call added.
	Added []JobRecord `json:"added,omitempty"`
	// Existing are the decision's jobs that were already pending (the same cluster, key and version).
	Existing []JobRecord `json:"existing,omitempty"`
	// AlreadyVerified are the decision's jobs whose version is already verified on their cluster.
	AlreadyVerified []policy.Job `json:"alreadyVerified,omitempty"`
}

// read returns the state ConfigMap (nil when it does not exist yet) and its content.
func (s *Store) read(ctx context.Context) (*corev1.ConfigMap, document, error) {
	var cm *corev1.ConfigMap
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		cm, err = s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, s.StateName(), metav1.GetOptions{})
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return nil, document{}, nil
	case err != nil:
		return nil, document{}, fmt.Errorf("get configmap %s/%s: %w", s.namespace, s.StateName(), s.denied(err, "get", "configmaps"))
	}
	d, err := decodeState(cm)
	return cm, d, err
}

// modify applies change to the state under optimistic concurrency: read, change, write with the
// read resourceVersion; a conflict (or a concurrent create) reads again and re-applies change, which
// must therefore derive everything from the document it is given. change reports whether it
// changed anything; nothing is written when it did not.
func (s *Store) modify(ctx context.Context, change func(d *document) (bool, error)) error {
	for range maxConflicts {
		cm, d, err := s.read(ctx)
		if err != nil {
			return err
		}
		changed, err := change(&d)
		if err != nil || !changed {
			return err
		}
		d.prune(s.clock.Now(), s.handledLimit, s.handledTTL)
		data, err := d.encode()
		if err != nil {
			return fmt.Errorf("configmap %s/%s: %w", s.namespace, s.StateName(), err)
		}
		if cm == nil {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: s.StateName(), Namespace: s.namespace, Labels: s.labels("state")}, Data: data}
			err = s.create(ctx, "configmaps", cm.Name, func(ctx context.Context) error {
				_, err := s.client.CoreV1().ConfigMaps(s.namespace).Create(ctx, cm, metav1.CreateOptions{FieldManager: s.fieldManager})
				return err
			})
			if apierrors.IsAlreadyExists(err) {
				continue // a concurrent writer created it first: re-read and re-apply
			}
			return err
		}
		cm = cm.DeepCopy()
		cm.Data = data // cm.ResourceVersion is the precondition
		err = s.call(ctx, func(ctx context.Context) error {
			_, err := s.client.CoreV1().ConfigMaps(s.namespace).Update(ctx, cm, metav1.UpdateOptions{FieldManager: s.fieldManager})
			return err
		})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("update configmap %s/%s: %w", s.namespace, s.StateName(), s.denied(err, "update", "configmaps"))
		}
		return nil
	}
	return fmt.Errorf("update configmap %s/%s: still conflicting after %d attempts", s.namespace, s.StateName(), maxConflicts)
}

// Snapshot returns what policy.Decide needs to know of this cluster: handled events, verified
// versions and pending jobs. Aliases are the caller's to fill in (from DescribeKey).
func (s *Store) Snapshot(ctx context.Context) (policy.State, error) {
	_, d, err := s.read(ctx)
	if err != nil {
		return policy.State{}, err
	}
	d.prune(s.clock.Now(), s.handledLimit, s.handledTTL)
	st := policy.State{
		Handled:  make(map[events.DedupKey]bool, len(d.Handled)),
		Verified: make(map[policy.Target]string, len(d.Verified)),
		Pending:  make([]policy.Job, 0, len(d.Jobs)),
	}
	for _, h := range d.Handled {
		st.Handled[h.DedupKey] = true
	}
	for _, v := range d.Verified {
		st.Verified[policy.Target{Cluster: v.Cluster, Key: v.Key}] = v.Version
	}
	for _, j := range sortJobs(d.Jobs) {
		st.Pending = append(st.Pending, j.Job)
	}
	return st, nil
}

// Pending returns the pending jobs, earliest NotBefore first.
func (s *Store) Pending(ctx context.Context) ([]JobRecord, error) {
	_, d, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	return sortJobs(d.Jobs), nil
}

// VerifiedVersions returns the verified version of every key recorded on this cluster.
func (s *Store) VerifiedVersions(ctx context.Context) ([]Verified, error) {
	_, d, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	return d.Verified, nil
}

func sortJobs(js []JobRecord) []JobRecord {
	out := append([]JobRecord(nil), js...)
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].NotBefore.Equal(out[j].NotBefore) {
			return out[i].NotBefore.Before(out[j].NotBefore)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Record records a decision in one atomic update: its event as handled (for every kind but
// Ignore, which writes nothing) and its jobs, idempotently: a job with the cluster, key and version
// of a pending one is that job, and a job for a version already verified is not added. Concurrent
// Records of the same decision add each job once and give First to exactly one of them. Every job
// must belong to this Store's cluster (a Fleet routes them).
func (s *Store) Record(ctx context.Context, dec policy.Decision) (Recorded, error) {
	if dec.Kind == policy.Ignore {
		return Recorded{}, nil
	}
	return s.record(ctx, dec.Event, dec.Jobs)
}

// AddJobs records jobs that no event asked for (the off-peak timer found a key's primary version
// moved), with the same idempotence as Record.
func (s *Store) AddJobs(ctx context.Context, jobs ...policy.Job) (Recorded, error) {
	return s.record(ctx, events.DedupKey{}, jobs)
}

func (s *Store) record(ctx context.Context, ev events.DedupKey, jobs []policy.Job) (Recorded, error) {
	for _, j := range jobs {
		if j.Cluster != s.cluster {
			return Recorded{}, fmt.Errorf("record job for cluster %q in the state of cluster %q", j.Cluster, s.cluster)
		}
		if j.Key == "" {
			return Recorded{}, fmt.Errorf("record job for cluster %s: empty key", j.Cluster)
		}
	}
	var out Recorded
	err := s.modify(ctx, func(d *document) (bool, error) {
		out = Recorded{}
		now := s.clock.Now()
		changed := false
		if ev != (events.DedupKey{}) && !d.handled(ev) {
			d.Handled = append(d.Handled, HandledEvent{DedupKey: ev, At: now})
			out.First, changed = true, true
		}
		for _, j := range jobs {
			id := JobID(j.Cluster, j.Key, j.Version)
			if existing, ok := d.job(id); ok {
				out.Existing = append(out.Existing, existing)
				continue
			}
			if v, ok := d.verified(j.Cluster, j.Key); ok && j.Version != "" && v == j.Version {
				out.AlreadyVerified = append(out.AlreadyVerified, j)
				continue
			}
			rec := JobRecord{Job: j, ID: id, Event: ev, Created: now}
			d.Jobs = append(d.Jobs, rec)
			out.Added = append(out.Added, rec)
			changed = true
		}
		return changed, nil
	})
	if err != nil {
		return Recorded{}, fmt.Errorf("record in cluster %s: %w", s.cluster, err)
	}
	return out, nil
}

// Complete records that job finished: every Secret of its cluster is re-encrypted under version
// and verified. It sets the key's verified version, removes the job and every other pending job of
// the same key that version satisfies (the same version, or the primary at run time), and deletes
// their checkpoints. It returns the removed jobs.
func (s *Store) Complete(ctx context.Context, job JobRecord, version string) ([]JobRecord, error) {
	if version == "" {
		return nil, errors.New("complete job: empty verified version")
	}
	if job.Cluster != s.cluster {
		return nil, fmt.Errorf("complete job %s of cluster %q in the state of cluster %q", job.ID, job.Cluster, s.cluster)
	}
	var removed []JobRecord
	err := s.modify(ctx, func(d *document) (bool, error) {
		removed = nil
		d.setVerified(Verified{Cluster: job.Cluster, Key: job.Key, Version: version, At: s.clock.Now()})
		kept := d.Jobs[:0]
		for _, j := range d.Jobs {
			if j.ID == job.ID || (j.Cluster == job.Cluster && j.Key == job.Key && (j.Version == "" || j.Version == version)) {
				removed = append(removed, j)
				continue
			}
			kept = append(kept, j)
		}
		d.Jobs = kept
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("complete job %s in cluster %s: %w", job.ID, s.cluster, err)
	}
	ids := map[string]bool{job.ID: true}
	for _, j := range removed {
		ids[j.ID] = true
	}
	for id := range ids {
		if err := s.DeleteCheckpoint(ctx, id); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// Deferred is what Defer changed.
type Deferred struct {
	// Job is the job as stored now.
	Job JobRecord
	// NewOutcome is true when kind differs from the kind of the job's previous deferral: the
	// caller's notice about it has not been sent yet (one notice per job and kind of outcome).
	NewOutcome bool
}

// Defer records that a run of job ended with an outcome that needs a person (failed,
// suspicious), and moves the job's earliest start to notBefore so that the next ticks do not run
// the same pass again at once. kind is the outcome's status; reason says why. A job no longer
// pending is not an error: Deferred.Job is then zero.
func (s *Store) Defer(ctx context.Context, jobID string, notBefore time.Time, kind, reason string) (Deferred, error) {
	var out Deferred
	err := s.modify(ctx, func(d *document) (bool, error) {
		out = Deferred{}
		for i := range d.Jobs {
			j := &d.Jobs[i]
			if j.ID != jobID {
				continue
			}
			prev, _, _ := strings.Cut(j.LastOutcome, ":")
			out.NewOutcome = prev != kind
			j.Attempts++
			j.LastOutcome, j.LastOutcomeAt = kind+": "+reason, s.clock.Now()
			if notBefore.After(j.NotBefore) {
				j.NotBefore = notBefore
			}
			out.Job = *j
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return Deferred{}, fmt.Errorf("defer job %s in cluster %s: %w", jobID, s.cluster, err)
	}
	return out, nil
}
