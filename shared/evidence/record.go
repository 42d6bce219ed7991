package evidence

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// Schema names the record format.
const Schema = "rekey.io/evidence/v1"

// Record is the evidence of one job outcome. It is JSON-serialisable and holds no Secret data.
type Record struct {
	Schema string `json:"schema"`
	// ID identifies the record: the job and when it ended.
	ID string `json:"id"`
	// Cluster is the cluster the job ran on; Job the job's ID.
	Cluster string `json:"cluster"`
	Job     string `json:"job,omitempty"`
	// Key is the key as configured; KeyID what it resolved to; Alias the alias, when configured by
	// one.
	Key   string `json:"key"`
	KeyID string `json:"keyId,omitempty"`
	Alias string `json:"alias,omitempty"`
	// FromVersions are the key versions the objects were under before (as far as rekey knows: the
	// version last verified on the cluster, and the primary's predecessor); ToVersion is the
	// version the job brought them to.
	FromVersions []string `json:"fromVersions,omitempty"`
	ToVersion    string   `json:"toVersion,omitempty"`
	// Status is the job's outcome (done, suspicious, failed, refused, partial) and Reason why.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Trigger says what asked for the job.
	Trigger Trigger `json:"trigger"`
	// StartedAt and EndedAt bound the whole job (over all its invocations); Phases say when each
	// phase ran.
	StartedAt time.Time `json:"startedAt"`
	EndedAt   time.Time `json:"endedAt"`
	Phases    []Phase   `json:"phases,omitempty"`
	// Adoption is the evidence that the API servers encrypt with ToVersion; TimeToAdoptionSeconds
	// runs from the rotation to that proof (0 when not known).
	Adoption              *Adoption `json:"adoption,omitempty"`
	TimeToAdoptionSeconds float64   `json:"timeToAdoptionSeconds,omitempty"`
	// Strategy is how objects were rewritten, and why.
	Strategy *Strategy `json:"strategy,omitempty"`
	// Pass and Convergence count the outcomes of the pass and of the convergence pass.
	Pass        reencrypt.Counts  `json:"pass"`
	Convergence *reencrypt.Counts `json:"convergence,omitempty"`
	// Replicas are the API server replicas the convergence pass covered, of Expected (0: not known).
	Replicas         []string `json:"replicas,omitempty"`
	ExpectedReplicas int      `json:"expectedReplicas,omitempty"`
	// Verdict is the verifier's (PASS, FAIL, UNKNOWN, "" when it did not run), Layers its layers.
	Verdict string  `json:"verdict,omitempty"`
	Layers  []Layer `json:"layers,omitempty"`
	// Retirement says whether the previous versions may be retired, and what stays behind.
	Retirement Retirement `json:"retirement"`
	// TrailEventIDs are the ActionTrail event IDs the record relies on (the trigger's, and the
	// audit layer's calls under the new version).
	TrailEventIDs []string `json:"trailEventIds,omitempty"`
	// RekeyVersion is the rekey build that wrote it.
	RekeyVersion string `json:"rekeyVersion"`
}

// Trigger kinds.
const (
	TriggerEvent = "event"
	TriggerTimer = "timer"
)

// Counts returns the counts that describe the job's result: the convergence pass's, or the pass's
// when no convergence ran.
func (r Record) Counts() reencrypt.Counts {
	if r.Convergence != nil {
		return *r.Convergence
	}
	return r.Pass
}

// Duration is how long the job ran, from its start to its end.
func (r Record) Duration() time.Duration {
	if r.StartedAt.IsZero() || r.EndedAt.Before(r.StartedAt) {
		return 0
	}
	return r.EndedAt.Sub(r.StartedAt)
}

// Trigger is what asked for a job.
type Trigger struct {
	// Kind is TriggerEvent (an EventBridge event) or TriggerTimer (the timer's version check found
	// the primary moved, or a first baseline).
	Kind string `json:"kind"`
	// Source, EventID and Name identify an event (acs.kms, its id, CreateKeyVersion); RecordID is
	// the ActionTrail eventId; Actor who called; Time when.
	Source   string    `json:"source,omitempty"`
	EventID  string    `json:"eventId,omitempty"`
	Name     string    `json:"name,omitempty"`
	RecordID string    `json:"recordId,omitempty"`
	Actor    string    `json:"actor,omitempty"`
	Time     time.Time `json:"time,omitzero"`
	// Reason is the job's reason as recorded.
	Reason string `json:"reason,omitempty"`
}

// Phase is when one phase of the job ran (gate, pass, convergence, verifier). A phase spread over
// several invocations runs from its first start to its last end.
type Phase struct {
	Name      string    `json:"name"`
	StartedAt time.Time `json:"startedAt"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
}

// Seconds is how long the phase ran (0 while it has not ended).
func (p Phase) Seconds() float64 {
	if p.EndedAt.IsZero() {
		return 0
	}
	return p.EndedAt.Sub(p.StartedAt).Seconds()
}

// Adoption summarises the adoption gate's evidence.
type Adoption struct {
	Kind     string `json:"kind"`
	Direct   bool   `json:"direct"`
	Replicas int    `json:"replicas,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// Strategy is how objects were rewritten and why.
type Strategy struct {
	Name   string `json:"name"`
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Layer is one verifier layer's verdict and reasons.
type Layer struct {
	Name    string   `json:"name"`
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
}

// Retirement says whether the key versions before ToVersion may be retired.
type Retirement struct {
	// Verdict is the verifier's retirement verdict (safe, not-safe, cannot-tell) and Reason why.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason,omitempty"`
	// Statement says what stays behind, always.
	Statement string `json:"statement"`
}

// RetirementStatement is what every record says about old ciphertext, whatever the verdict.
const RetirementStatement = "Re-encryption rewrites the stored objects, not their history: old ciphertext stays in etcd's " +
	"MVCC history until compaction and in every etcd backup taken before this job. The old key version is still needed " +
	"to restore those backups: keep it (and the key) until they have expired."

// RecordID returns the ID of a record of job that ended at end.
func RecordID(job string, end time.Time) string {
	return fmt.Sprintf("%s-%d", job, end.UTC().UnixMilli())
}

// RekeyVersion returns this build's version: the module version and VCS revision when the binary
// was built from a checkout ("devel" otherwise).
func RekeyVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " (" + rev + dirty + ")"
	}
	return v
}
