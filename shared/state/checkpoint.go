package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// Phase is the part of a job a checkpoint belongs to.
type Phase string

// Phases of a job.
const (
	// PhasePass is the engine pass that rewrites stale Secrets.
	PhasePass Phase = "pass"
	// PhaseConvergence is the verifier's convergence pass (a rewrite pass that must change nothing).
	PhaseConvergence Phase = "convergence"
)

// Checkpoint is where a job stopped: enough for the next invocation to resume the list where this
// one left off, object by object (After). An expired continue token restarts the list, which is
// safe: rewriting is idempotent.
type Checkpoint struct {
	// Job is the job's ID; Holder the Lease holder (invocation) that wrote it. Both are set by the
	// Checkpointer.
	Job    string `json:"job"`
	Holder string `json:"holder"`
	Phase  Phase  `json:"phase"`
	// Resource is the resource being listed ("secrets"); Continue the list continue token of its
	// next page ("" = from the start of Resource).
	Resource string `json:"resource,omitempty"`
	Continue string `json:"continue,omitempty"`
	// Namespace is the namespace being listed when the job is limited to namespaces ("" otherwise).
	Namespace string `json:"namespace,omitempty"`
	// After is the key (namespace/name) of the last object of the page listed from Continue up to
	// which every object reached an outcome: the next invocation skips the objects up to it
	// (reencrypt.Position.After). "" = none of that page yet.
	After string `json:"after,omitempty"`
	// Stalled counts the invocations in a row that reached this phase's pass and ended without
	// moving the checkpoint (kept by the caller; 0 once one moves it).
	Stalled int `json:"stalled,omitempty"`
	// Notes are facts the caller keeps with the checkpoint (package job: the key version the
	// adoption gate proved, whether the convergence pass completed). Names and versions only.
	Notes map[string]string `json:"notes,omitempty"`
	// Counts are the phase's counters so far.
	Counts reencrypt.Counts `json:"counts"`
	// Invocations counts the invocations that worked on the phase (kept by the caller).
	Invocations int `json:"invocations"`
	// Updated is when it was written (set by the Checkpointer).
	Updated time.Time `json:"updated"`
}

// ErrCheckpointTaken is returned when another holder wrote the checkpoint since this Checkpointer
// read it, or deleted it: someone else is working on (or finished) the job, and this writer must
// stop rather than clobber it.
var ErrCheckpointTaken = errors.New("checkpoint taken by another holder")

const keyCheckpoint = "checkpoint.json"

// DefaultCheckpointInterval is the default minimum time between two rate-bounded checkpoint writes.
const DefaultCheckpointInterval = 2 * time.Second

// CheckpointOptions bound how often Save writes.
type CheckpointOptions struct {
	// Interval: Save writes when at least this much time passed since the last write (default
	// DefaultCheckpointInterval).
	Interval time.Duration
	// Objects: Save also writes, before Interval has passed, once this many more objects reached an
	// outcome (Counts.Done) since the last write (0: time only).
	Objects int64
}

// Checkpointer writes one job's checkpoint for one holder, at a bounded rate, under optimistic
// concurrency. It is safe for concurrent use.
type Checkpointer struct {
	store  *Store
	job    string
	holder string
	opts   CheckpointOptions

	mu        sync.Mutex
	rv        string // resourceVersion of the stored checkpoint ("" = none)
	loaded    Checkpoint
	found     bool
	last      Checkpoint
	lastWrite time.Time
	writes    int
}

func decodeCheckpoint(cm *corev1.ConfigMap) (Checkpoint, error) {
	var cp Checkpoint
	if err := json.Unmarshal([]byte(cm.Data[keyCheckpoint]), &cp); err != nil {
		return Checkpoint{}, fmt.Errorf("configmap %s/%s: %s: %w", cm.Namespace, cm.Name, keyCheckpoint, err)
	}
	return cp, nil
}

// getCheckpoint reads a checkpoint ConfigMap (nil, zero when there is none).
func (s *Store) getCheckpoint(ctx context.Context, jobID string) (*corev1.ConfigMap, Checkpoint, error) {
	var cm *corev1.ConfigMap
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		cm, err = s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, CheckpointName(jobID), metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil, Checkpoint{}, nil
	}
	if err != nil {
		return nil, Checkpoint{}, fmt.Errorf("get configmap %s/%s: %w", s.namespace, CheckpointName(jobID), s.denied(err, "get", "configmaps"))
	}
	cp, err := decodeCheckpoint(cm)
	return cm, cp, err
}

// LoadCheckpoint returns a job's stored checkpoint and whether there is one.
func (s *Store) LoadCheckpoint(ctx context.Context, jobID string) (Checkpoint, bool, error) {
	cm, cp, err := s.getCheckpoint(ctx, jobID)
	return cp, cm != nil, err
}

// DeleteCheckpoint deletes a job's checkpoint (none is fine).
func (s *Store) DeleteCheckpoint(ctx context.Context, jobID string) error {
	err := s.call(ctx, func(ctx context.Context) error {
		return s.client.CoreV1().ConfigMaps(s.namespace).Delete(ctx, CheckpointName(jobID), metav1.DeleteOptions{})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete configmap %s/%s: %w", s.namespace, CheckpointName(jobID), s.denied(err, "delete", "configmaps"))
	}
	return nil
}

// OpenCheckpoint reads a job's checkpoint for holder and returns the Checkpointer that writes it.
// Loaded tells where the previous invocation stopped.
func (s *Store) OpenCheckpoint(ctx context.Context, jobID, holder string, opts CheckpointOptions) (*Checkpointer, error) {
	if jobID == "" || holder == "" {
		return nil, fmt.Errorf("open checkpoint: job %q and holder %q must be set", jobID, holder)
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultCheckpointInterval
	}
	cm, cp, err := s.getCheckpoint(ctx, jobID)
	if err != nil {
		return nil, err
	}
	c := &Checkpointer{store: s, job: jobID, holder: holder, opts: opts, loaded: cp, last: cp}
	if cm != nil {
		c.rv, c.found = cm.ResourceVersion, true
	}
	return c, nil
}

// Loaded returns the checkpoint stored when the Checkpointer was opened, and whether there was one.
func (c *Checkpointer) Loaded() (Checkpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loaded, c.found
}

// Writes returns how many times the Checkpointer wrote.
func (c *Checkpointer) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// Save writes cp when a write is due (Interval passed, or Objects more objects done, since the
// last write; the first Save always writes) and reports whether it wrote.
func (c *Checkpointer) Save(ctx context.Context, cp Checkpoint) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.store.clock.Now()
	due := c.writes == 0 || now.Sub(c.lastWrite) >= c.opts.Interval ||
		(c.opts.Objects > 0 && cp.Counts.Done()-c.last.Counts.Done() >= c.opts.Objects)
	if !due {
		return false, nil
	}
	return true, c.write(ctx, cp)
}

// Flush writes cp now, whatever the rate (at the end of an invocation, before its deadline).
func (c *Checkpointer) Flush(ctx context.Context, cp Checkpoint) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.write(ctx, cp)
}

// write stores cp with the last seen resourceVersion as precondition. A conflict re-reads: when
// this holder wrote the stored checkpoint (an earlier attempt succeeded after all), it writes
// again over it; when another holder did, it returns ErrCheckpointTaken.
func (c *Checkpointer) write(ctx context.Context, cp Checkpoint) error {
	s := c.store
	name := CheckpointName(c.job)
	cp.Job, cp.Holder, cp.Updated = c.job, c.holder, s.clock.Now()
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint %s: %w", c.job, err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace, Labels: s.labels("checkpoint")},
		Data:       map[string]string{keyCheckpoint: string(b)},
	}
	for range maxConflicts {
		var out *corev1.ConfigMap
		if c.rv == "" {
			err = s.create(ctx, "configmaps", name, func(ctx context.Context) error {
				var err error
				out, err = s.client.CoreV1().ConfigMaps(s.namespace).Create(ctx, cm, metav1.CreateOptions{FieldManager: s.fieldManager})
				return err
			})
		} else {
			cm.ResourceVersion = c.rv
			err = s.call(ctx, func(ctx context.Context) error {
				var err error
				out, err = s.client.CoreV1().ConfigMaps(s.namespace).Update(ctx, cm, metav1.UpdateOptions{FieldManager: s.fieldManager})
				return err
			})
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("checkpoint job %s: %w: it was deleted (the job completed or was reset elsewhere)", c.job, ErrCheckpointTaken)
			}
			if err != nil && !apierrors.IsConflict(err) {
				err = fmt.Errorf("update configmap %s/%s: %w", s.namespace, name, s.denied(err, "update", "configmaps"))
			}
		}
		if err == nil {
			c.rv, c.last, c.lastWrite = out.ResourceVersion, cp, cp.Updated
			c.writes++
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("checkpoint job %s: %w", c.job, err)
		}
		stored, other, err := s.getCheckpoint(ctx, c.job)
		if err != nil {
			return fmt.Errorf("checkpoint job %s: %w", c.job, err)
		}
		if stored == nil {
			return fmt.Errorf("checkpoint job %s: %w: it was deleted (the job completed or was reset elsewhere)", c.job, ErrCheckpointTaken)
		}
		if other.Holder != c.holder {
			return fmt.Errorf("checkpoint job %s: %w: %q wrote it at %s", c.job, ErrCheckpointTaken, other.Holder, other.Updated.UTC().Format(time.RFC3339))
		}
		c.rv = stored.ResourceVersion
	}
	return fmt.Errorf("checkpoint job %s: still conflicting after %d attempts", c.job, maxConflicts)
}
