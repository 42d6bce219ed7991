// Package status answers the platform team's morning question for a fleet: which clusters still
// hold Secrets under an old key version, and why. [Collect] reads, for each target (cluster and
// key), the key's state and primary version from KMS and, from the cluster's own state in
// rekey-system, the version last verified, the pending jobs, the last outcome (the newest evidence
// record) and the run Lease's holder; it works out how long the cluster has been behind the primary
// version. One unreachable cluster is a row with its error, never a failure of the whole report.
// `rekey status` prints it (a kubectl-like table or JSON) and exits 1 when a row is unhealthy.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/evidence"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/state"
)

// DefaultMaxBehind is how long a cluster may stay behind the key's primary version before its row
// is unhealthy: two off-peak windows.
const DefaultMaxBehind = 48 * time.Hour

// Opener opens a cluster's state store. An error makes the cluster's rows unreachable.
type Opener func(ctx context.Context, cluster string) (*state.Store, error)

// Inputs are what Collect reads.
type Inputs struct {
	// Targets are the clusters and keys to report on, as in REKEY_TARGETS.
	Targets []config.Target
	// KMS describes the keys; Open reaches the clusters.
	KMS  kms.Client
	Open Opener
	// Clock says what time it is (a real clock in production).
	Clock clock.PassiveClock
	// MaxBehind is how long a cluster may be behind the primary version (0: DefaultMaxBehind).
	MaxBehind time.Duration
	// ClusterTimeout bounds the calls on one cluster (0: none beyond ctx).
	ClusterTimeout time.Duration
}

// Report is the status of every target.
type Report struct {
	CheckedAt time.Time `json:"checkedAt"`
	// MaxBehindSeconds is the threshold the rows were judged by.
	MaxBehindSeconds float64 `json:"maxBehindSeconds"`
	Rows             []Row   `json:"rows"`
	// Healthy is true when every row is.
	Healthy bool `json:"healthy"`
}

// Row is one target's status.
type Row struct {
	Cluster string `json:"cluster"`
	Key     string `json:"key"`
	// KeyState is the key's state in KMS (Enabled, Disabled, PendingDeletion, ...); Primary its
	// primary version.
	KeyState string `json:"keyState,omitempty"`
	Primary  string `json:"primaryVersion,omitempty"`
	// Verified is the version every Secret of the cluster was last verified under, at VerifiedAt.
	Verified   string    `json:"verifiedVersion,omitempty"`
	VerifiedAt time.Time `json:"verifiedAt,omitzero"`
	// Behind is true when Verified is not Primary; BehindSince is since when (the first pending job
	// for the key was recorded, or the key last rotated; zero when not known) and BehindSeconds how
	// long until CheckedAt.
	Behind        bool      `json:"behind"`
	BehindSince   time.Time `json:"behindSince,omitzero"`
	BehindSeconds float64   `json:"behindSeconds,omitempty"`
	// Pending are the key's pending jobs, earliest start first.
	Pending []Pending `json:"pending,omitempty"`
	// LastOutcome is the newest evidence record of the key on the cluster.
	LastOutcome *Outcome `json:"lastOutcome,omitempty"`
	// Running names the Lease holder when a job is running on the cluster.
	Running *Running `json:"running,omitempty"`
	// Unreachable is true when the cluster's state could not be read.
	Unreachable bool `json:"unreachable,omitempty"`
	// Error says why the row is incomplete (the cluster or KMS unreachable, permission denied).
	Error string `json:"error,omitempty"`
	// Problems say why the row is unhealthy; Healthy is true when there are none.
	Problems []string `json:"problems,omitempty"`
	Healthy  bool     `json:"healthy"`
}

// Pending is a pending job.
type Pending struct {
	Job       string    `json:"job"`
	Version   string    `json:"version,omitempty"`
	NotBefore time.Time `json:"notBefore"`
	Created   time.Time `json:"created"`
	// Attempts counts its failed or suspicious runs; LastOutcome is the last of them.
	Attempts    int    `json:"attempts,omitempty"`
	LastOutcome string `json:"lastOutcome,omitempty"`
}

// Outcome is a job's outcome as its evidence record has it.
type Outcome struct {
	Status string    `json:"status"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
	Record string    `json:"record"`
	Job    string    `json:"job,omitempty"`
}

// Running describes the holder of the cluster's run Lease.
type Running struct {
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
}

// cluster is what Collect read from one cluster, shared by its rows.
type cluster struct {
	err      error
	verified []state.Verified
	pending  []state.JobRecord
	records  []evidence.Record
	recErr   error
	lease    *Running
}

// Collect reads the status of every target. It does not fail: what cannot be read is the row's
// Error (and a problem).
func Collect(ctx context.Context, in Inputs) Report {
	now := in.Clock.Now()
	maxBehind := in.MaxBehind
	if maxBehind <= 0 {
		maxBehind = DefaultMaxBehind
	}
	rep := Report{CheckedAt: now.UTC(), MaxBehindSeconds: maxBehind.Seconds(), Healthy: true}
	keys := map[string]kms.KeyMetadata{}
	keyErrs := map[string]error{}
	clusters := map[string]*cluster{}
	for _, t := range in.Targets {
		if _, ok := keys[t.Key]; !ok && keyErrs[t.Key] == nil {
			md, err := in.KMS.DescribeKey(ctx, t.Key)
			if err != nil {
				keyErrs[t.Key] = fmt.Errorf("describe key: %w", err)
			} else {
				keys[t.Key] = md
			}
		}
		c, ok := clusters[t.Cluster]
		if !ok {
			c = readCluster(ctx, in, t.Cluster, now)
			clusters[t.Cluster] = c
		}
		row := judge(t, keys[t.Key], keyErrs[t.Key], c, now, maxBehind)
		rep.Healthy = rep.Healthy && row.Healthy
		rep.Rows = append(rep.Rows, row)
	}
	return rep
}

func readCluster(ctx context.Context, in Inputs, id string, now time.Time) *cluster {
	if in.ClusterTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, in.ClusterTimeout)
		defer cancel()
	}
	c := &cluster{}
	st, err := in.Open(ctx, id)
	if err != nil {
		c.err = fmt.Errorf("open cluster %s: %w", id, err)
		return c
	}
	if c.verified, err = st.VerifiedVersions(ctx); err != nil {
		c.err = fmt.Errorf("cluster %s unreachable: %w", id, err)
		return c
	}
	if c.pending, err = st.Pending(ctx); err != nil {
		c.err = fmt.Errorf("cluster %s: %w", id, err)
		return c
	}
	if stored, err := st.Evidence(ctx); err != nil {
		c.recErr = err
	} else {
		for _, s := range stored {
			var r evidence.Record
			if json.Unmarshal(s.Body, &r) == nil {
				c.records = append(c.records, r)
			}
		}
		evidence.SortByEnd(c.records)
	}
	if l, found, err := st.CurrentLease(ctx); err == nil && found && l.Holder != "" && l.Expires.After(now) {
		c.lease = &Running{Holder: l.Holder, Since: l.Acquired, Expires: l.Expires}
	}
	return c
}

// judge makes the row of target t.
func judge(t config.Target, md kms.KeyMetadata, keyErr error, c *cluster, now time.Time, maxBehind time.Duration) Row {
	row := Row{Cluster: t.Cluster, Key: t.Key, KeyState: md.State, Primary: md.PrimaryKeyVersion}
	var errs []string
	if keyErr != nil {
		errs = append(errs, keyErr.Error())
		row.Problems = append(row.Problems, "the key could not be described: "+keyErr.Error())
	} else if !md.Enabled() {
		row.Problems = append(row.Problems, fmt.Sprintf("the key is %s: the API server cannot encrypt or decrypt with it", md.State))
	}
	if c.err != nil {
		errs = append(errs, c.err.Error())
		row.Unreachable = true
		row.Problems = append(row.Problems, "unreachable: "+c.err.Error())
		row.Error = join(errs)
		return row
	}
	for _, v := range c.verified {
		if v.Key == t.Key {
			row.Verified, row.VerifiedAt = v.Version, v.At
		}
	}
	for _, j := range c.pending {
		if j.Key == t.Key {
			row.Pending = append(row.Pending, Pending{Job: j.ID, Version: j.Version, NotBefore: j.NotBefore, Created: j.Created,
				Attempts: j.Attempts, LastOutcome: j.LastOutcome})
		}
	}
	slices.SortStableFunc(row.Pending, func(a, b Pending) int { return a.NotBefore.Compare(b.NotBefore) })
	for i := len(c.records) - 1; i >= 0; i-- {
		if r := c.records[i]; r.Key == t.Key {
			row.LastOutcome = &Outcome{Status: r.Status, Reason: r.Reason, At: r.EndedAt, Record: r.ID, Job: r.Job}
			break
		}
	}
	if c.recErr != nil {
		errs = append(errs, "evidence records not readable: "+c.recErr.Error())
	}
	row.Running = c.lease

	if row.Primary != "" && row.Verified != row.Primary {
		row.Behind = true
		for _, p := range row.Pending {
			if row.BehindSince.IsZero() || p.Created.Before(row.BehindSince) {
				row.BehindSince = p.Created
			}
		}
		if row.BehindSince.IsZero() {
			row.BehindSince = md.LastRotationDate
		}
		switch {
		case row.BehindSince.IsZero():
			row.Problems = append(row.Problems, "behind the primary version since a time rekey does not know (no pending job, no rotation date)")
		default:
			row.BehindSince = row.BehindSince.UTC()
			behind := now.Sub(row.BehindSince)
			row.BehindSeconds = behind.Round(time.Second).Seconds()
			if behind > maxBehind {
				row.Problems = append(row.Problems, fmt.Sprintf("behind the primary version %s for %s (more than %s)",
					row.Primary, Human(behind), Human(maxBehind)))
			}
		}
	}
	if o := row.LastOutcome; o != nil && o.Status != "done" {
		row.Problems = append(row.Problems, fmt.Sprintf("the last outcome was %s (%s): %s", o.Status, o.Record, o.Reason))
	}
	row.Error = join(errs)
	row.Healthy = len(row.Problems) == 0
	return row
}

func join(s []string) string {
	out := ""
	for i, e := range s {
		if i > 0 {
			out += "; "
		}
		out += e
	}
	return out
}
