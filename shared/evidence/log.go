package evidence

import (
	"strings"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/alicloud"
)

// LogMessage is the message of the log line every record is also written as.
const LogMessage = "evidence record"

// LogFields are the stable field names of the log line (besides zerolog's level, time and message
// and the function's requestId and function): the Log Service index in infra/sls/index.json
// indexes exactly these, and a test keeps the two equal.
//
//   - cluster, key: the cluster ID and the key as configured, shortened like every key reference
//     rekey logs (alicloud.Redact: stable, so lines about one key correlate)
//   - fromVersions: the versions before, comma-separated; toVersion: the version after
//   - status: done, suspicious, failed, refused or partial
//   - counts: {listed, rewritten, current, deleted, failed, notAttempted} of the convergence pass
//     (of the pass when no convergence ran)
//   - evidence: {verdict, layers ("convergence=PASS,audit=WARN"), adoption, replicas, expectedReplicas,
//     retirement}
//   - durations: seconds {total, gate, pass, convergence, verifier, timeToAdoption}
//   - eventId: the ActionTrail eventId of the trigger ("" for the timer's version check)
//   - record, job: the record's ID and the job's
var LogFields = []string{"cluster", "key", "fromVersions", "toVersion", "status", "counts", "evidence", "durations", "eventId", "record", "job"}

// Log writes r as one log line on e (the caller picks the level) with the fields of LogFields.
func (r Record) Log(e *zerolog.Event) {
	c := r.Pass
	if r.Convergence != nil {
		c = *r.Convergence
	}
	layers := make([]string, 0, len(r.Layers))
	for _, l := range r.Layers {
		layers = append(layers, l.Name+"="+l.Status)
	}
	adoption := ""
	if r.Adoption != nil {
		adoption = r.Adoption.Kind
	}
	d := zerolog.Dict().Float64("total", r.EndedAt.Sub(r.StartedAt).Seconds())
	for _, p := range r.Phases {
		d = d.Float64(p.Name, p.Seconds())
	}
	d = d.Float64("timeToAdoption", r.TimeToAdoptionSeconds)
	e.Str("cluster", r.Cluster).
		Str("key", alicloud.Redact(r.Key)).
		Str("fromVersions", strings.Join(r.FromVersions, ",")).
		Str("toVersion", r.ToVersion).
		Str("status", r.Status).
		Dict("counts", zerolog.Dict().Int64("listed", c.Listed).Int64("rewritten", c.Rewritten).Int64("current", c.Current).
			Int64("deleted", c.Deleted).Int64("failed", c.Failed).Int64("notAttempted", c.NotAttempted)).
		Dict("evidence", zerolog.Dict().Str("verdict", r.Verdict).Str("layers", strings.Join(layers, ",")).Str("adoption", adoption).
			Int("replicas", len(r.Replicas)).Int("expectedReplicas", r.ExpectedReplicas).Str("retirement", r.Retirement.Verdict)).
		Dict("durations", d).
		Str("eventId", r.Trigger.RecordID).
		Str("record", r.ID).
		Str("job", r.Job).
		Msg(LogMessage)
}
