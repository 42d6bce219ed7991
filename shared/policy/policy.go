package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/keyref"
	keystate "github.com/rekey-dev/rekey/shared/kms"
)

// Kind is what a decision asks for.
type Kind string

// Decision kinds.
const (
	// Rotate: record the jobs; they run once their NotBefore has passed (off-peak or immediately).
	Rotate Kind = "rotate"
	// Alert: someone endangered a watched key (or a watched cluster's encryption); send the alert,
	// never run.
	Alert Kind = "alert"
	// Recover: a danger was lifted (the key is enabled again, its deletion cancelled); send the notice.
	Recover Kind = "recover"
	// Note: worth a log line, nothing to do.
	Note Kind = "note"
	// Ignore: not rekey's business; Reason says why.
	Ignore Kind = "ignore"
)

// Severity grades an alert.
type Severity string

// Severities.
const (
	Critical Severity = "critical"
	Warning  Severity = "warning"
	Info     Severity = "info"
)

// Job asks for one rotation of one cluster.
type Job struct {
	// Cluster is the ACK cluster ID.
	Cluster string `json:"cluster"`
	// Key is the cluster's key as configured in REKEY_TARGETS.
	Key string `json:"key"`
	// Version is the key version the job must bring every Secret to; "" means the key's primary version
	// when the job runs (the record did not say which version was created).
	Version string `json:"version,omitempty"`
	// Reason says which event asked for the job.
	Reason string `json:"reason"`
	// NotBefore is the earliest start: the event's time plus the settle delay.
	NotBefore time.Time `json:"notBefore"`
	// Baseline marks the first job of a cluster (nothing verified yet, no rotation observed since
	// rekey started watching): its pass is not judged suspicious when it rewrites nothing.
	Baseline bool `json:"baseline,omitempty"`
	// Trigger describes the event that asked for the job (nil for the timer's version check).
	Trigger *Trigger `json:"trigger,omitempty"`
}

// Trigger describes the event behind a job, for its evidence record: the API called, by whom, when,
// and its ActionTrail eventId.
type Trigger struct {
	Name     string    `json:"name,omitempty"`
	Actor    string    `json:"actor,omitempty"`
	RecordID string    `json:"recordId,omitempty"`
	Time     time.Time `json:"time,omitzero"`
}

// triggerOf describes ev for a job.
func triggerOf(ev events.CloudEvent, when time.Time) *Trigger {
	return &Trigger{Name: ev.Record.EventName, Actor: actor(ev.Record.UserIdentity), RecordID: ev.Record.EventID, Time: when.UTC()}
}

// Notice is the content of an alert or a recovery notice, for the webhook and the log. It holds names
// and IDs only, never key material.
type Notice struct {
	Severity Severity `json:"severity"`
	// Title is one line for a chat message.
	Title string `json:"title"`
	// Key is the key as the event named it; Clusters are the watched clusters that use it.
	Key      string   `json:"key,omitempty"`
	Clusters []string `json:"clusters,omitempty"`
	// Action is the API called (eventName).
	Action string `json:"action"`
	// Impact says what breaks (or no longer breaks) and what to do.
	Impact string `json:"impact"`
	// Actor says who called, from userIdentity; SourceIP where from.
	Actor    string `json:"actor"`
	SourceIP string `json:"sourceIp,omitempty"`
	// Event identifies the CloudEvent; RecordID is the ActionTrail eventId.
	Event    events.DedupKey `json:"event"`
	RecordID string          `json:"recordId,omitempty"`
	Account  string          `json:"account"`
	Region   string          `json:"region"`
	// Time is when the call happened (zero when the event carried no usable time).
	Time time.Time `json:"time"`
	// DependentObjects says, per cluster at risk, how many objects depend on the key. Decide leaves
	// it empty; the rotation function fills it in before a critical KMS alert is sent.
	DependentObjects []DependentObjects `json:"dependentObjects,omitempty"`
	// KeyState is the key's state when the notice was sent (DescribeKey: Enabled, Disabled,
	// PendingDeletion, ...), "" when it could not be read. Decide leaves it empty.
	KeyState string `json:"keyState,omitempty"`
}

// DependentObjects is what depends on a key in one cluster when an alert is sent: names and
// counts only.
type DependentObjects struct {
	Cluster string `json:"cluster"`
	// Objects counts the Secrets of the cluster: all of them are encrypted with the key (in one
	// version or another) and become unreadable without it. -1 when they could not be counted.
	Objects int64 `json:"objects"`
	// OldVersions counts the Secrets still under a version older than Primary, as far as rekey
	// knows: 0 once Primary was verified on the cluster (Verified), -1 when unknown.
	OldVersions int64 `json:"oldVersions"`
	// Primary is the key's primary version; Verified the version last verified on the cluster
	// ("" when none yet), at VerifiedAt.
	Primary    string    `json:"primary,omitempty"`
	Verified   string    `json:"verified,omitempty"`
	VerifiedAt time.Time `json:"verifiedAt,omitzero"`
	// Job describes a job of the key in progress on the cluster (its checkpoint), if any.
	Job string `json:"job,omitempty"`
	// Source says where the counts come from and how far to trust them.
	Source string `json:"source"`
}

// Decision is the outcome for one event.
type Decision struct {
	Kind   Kind   `json:"kind"`
	Reason string `json:"reason"`
	// Event identifies the event decided on; Name is the ActionTrail eventName ("" for others).
	Event events.DedupKey `json:"event"`
	Name  string          `json:"name,omitempty"`
	// Jobs are set for Rotate.
	Jobs []Job `json:"jobs,omitempty"`
	// Notice is set for Alert and Recover.
	Notice *Notice `json:"notice,omitempty"`
}

// Target identifies a cluster and its configured key in the state snapshot.
type Target struct {
	Cluster string `json:"cluster"`
	Key     string `json:"key"`
}

// State is a read-only snapshot of what rekey has recorded, as far as Decide needs it.
type State struct {
	// Handled holds the events already decided on (EventBridge delivers some events twice).
	Handled map[events.DedupKey]bool
	// Verified maps a cluster and its configured key to the last key version fully re-encrypted and
	// verified there.
	Verified map[Target]string
	// Pending are recorded jobs not yet done.
	Pending []Job
	// Aliases maps "alias/<name>" to a key ID, as the caller knows them (from DescribeKey of the
	// configured keys); it lets an alias in an event match a key configured by ID and vice versa.
	Aliases map[string]string
}

// kmsTypes and csTypes are the source/type pairs rekey acts on.
var (
	kmsTypes = setOf(events.KMSTypes)
	csTypes  = setOf(events.CSTypes)
)

func setOf(s []string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}

// Decide decides what ev means under cfg, given the state snapshot st. It never fails: what it cannot
// act on it ignores with a reason.
func Decide(ev events.CloudEvent, cfg config.Config, st State) Decision {
	d := Decision{Event: ev.DedupKey()}
	ignore := func(format string, args ...any) Decision {
		d.Kind, d.Reason = Ignore, fmt.Sprintf(format, args...)
		return d
	}
	if ev.Record != nil {
		d.Name = ev.Record.EventName
	}
	if st.Handled[ev.DedupKey()] {
		return ignore("event %s was already handled (EventBridge delivered it again)", ev.DedupKey())
	}
	switch ev.Source {
	case events.SourceKMS:
		if !kmsTypes[ev.Type] {
			return ignore("type %q is not an ActionTrail type of source %s (want one of %s)", ev.Type, ev.Source, strings.Join(events.KMSTypes, ", "))
		}
	case events.SourceCS:
		if !csTypes[ev.Type] {
			return ignore("type %q is not an ActionTrail type of source %s (want %s)", ev.Type, ev.Source, strings.Join(events.CSTypes, ", "))
		}
	default:
		return ignore("source %q with type %q is not one rekey acts on", ev.Source, ev.Type)
	}
	rec := ev.Record
	if rec == nil {
		return ignore("event carries no ActionTrail record")
	}
	account := ev.AliyunAccountID
	if account == "" {
		account = rec.UserIdentity.AccountID
	}
	switch account {
	case "":
		return ignore("event names no account (aliyunaccountid, userIdentity.accountId)")
	case cfg.AccountID:
	default:
		return ignore("event of account %s, not REKEY_ACCOUNT_ID %s", account, cfg.AccountID)
	}
	region := ev.AliyunRegionID
	if region == "" {
		region = rec.AcsRegion
	}
	switch region {
	case "":
		return ignore("event names no region (aliyunregionid, acsRegion)")
	case cfg.Region:
	default:
		return ignore("event of region %s, not REKEY_REGION %s", region, cfg.Region)
	}
	if rec.Failed() {
		return ignore("%s failed (errorCode %s): nothing changed", rec.EventName, rec.ErrorCode)
	}
	if ev.Source == events.SourceCS {
		return decideCS(d, ev, cfg, st)
	}
	return decideKMS(d, ev, cfg, st)
}

func decideKMS(d Decision, ev events.CloudEvent, cfg config.Config, st State) Decision {
	rec := ev.Record
	ignore := func(format string, args ...any) Decision {
		d.Kind, d.Reason = Ignore, fmt.Sprintf(format, args...)
		return d
	}
	switch rec.EventName {
	case events.KMSCreateKeyVersion, events.KMSDisableKey, events.KMSScheduleKeyDeletion, events.KMSDeleteKeyMaterial,
		events.KMSEnableKey, events.KMSCancelKeyDeletion, events.KMSUpdateRotationPolicy:
	default:
		return ignore("KMS %s does not concern rotation", rec.EventName)
	}
	raw := events.KMSKeyID(*rec)
	if raw == "" {
		return ignore("%s record has no requestParameters.KeyId", rec.EventName)
	}
	ref, err := keyref.Parse(raw)
	if err != nil {
		return ignore("%s: KeyId: %v", rec.EventName, err)
	}
	if ref.IsARN() && ref.Account != cfg.AccountID {
		return ignore("KeyId is an ARN of account %s, not REKEY_ACCOUNT_ID %s", ref.Account, cfg.AccountID)
	}
	if ref.IsARN() && ref.Region != cfg.Region {
		return ignore("KeyId is an ARN of region %s, not REKEY_REGION %s", ref.Region, cfg.Region)
	}
	var targets []config.Target
	for _, t := range cfg.Targets {
		if t.Ref.Same(ref, st.Aliases) {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		return ignore("key %s is not watched (REKEY_TARGETS)", ref)
	}
	clusters := clusterIDs(targets)
	when, hasTime := eventTime(ev)

	switch rec.EventName {
	case events.KMSCreateKeyVersion:
		if !hasTime {
			return ignore("%s on key %s carries no parseable time (eventTime, time, aliyunpublishtime); the off-peak timer's version check will pick the rotation up", rec.EventName, ref)
		}
		version := events.KMSNewKeyVersion(*rec)
		var skipped []string
		for _, t := range targets {
			if why := handled(st, t, version); why != "" {
				skipped = append(skipped, t.Cluster+": "+why)
				continue
			}
			d.Jobs = append(d.Jobs, Job{
				Cluster:   t.Cluster,
				Key:       t.Key,
				Version:   version,
				Reason:    fmt.Sprintf("%s on key %s (event %s)", rec.EventName, ref, ev.DedupKey()),
				NotBefore: when.Add(cfg.Settle),
				Trigger:   triggerOf(ev, when),
			})
		}
		if len(d.Jobs) == 0 {
			return ignore("key %s version %s already handled on every cluster using it (%s)", ref, versionText(version), strings.Join(skipped, "; "))
		}
		d.Kind = Rotate
		d.Reason = fmt.Sprintf("%s on watched key %s (version %s): %d job(s), not before %s (event time + settle %s)",
			rec.EventName, ref, versionText(version), len(d.Jobs), when.Add(cfg.Settle).UTC().Format(time.RFC3339), cfg.Settle)
		if len(skipped) > 0 {
			d.Reason += "; skipped " + strings.Join(skipped, "; ")
		}
		return d

	case events.KMSDisableKey, events.KMSScheduleKeyDeletion, events.KMSDeleteKeyMaterial:
		d.Kind = Alert
		d.Reason = fmt.Sprintf("%s on watched key %s used by %s: alert, no run", rec.EventName, ref, strings.Join(clusters, ", "))
		d.Notice = notice(ev, Critical, ref.String(), clusters, eventAccount(ev), eventRegion(ev), when, hasTime)
		d.Notice.Title = fmt.Sprintf("CRITICAL: %s on KMS key %s used by %d cluster(s)", rec.EventName, ref, len(clusters))
		d.Notice.Impact = dangerImpact(rec.EventName)
		return d

	case events.KMSEnableKey, events.KMSCancelKeyDeletion:
		d.Kind = Recover
		d.Reason = fmt.Sprintf("%s on watched key %s: recovery notice", rec.EventName, ref)
		d.Notice = notice(ev, Info, ref.String(), clusters, eventAccount(ev), eventRegion(ev), when, hasTime)
		d.Notice.Title = fmt.Sprintf("Recovered: %s on KMS key %s", rec.EventName, ref)
		d.Notice.Impact = recoveryImpact(rec.EventName)
		return d

	default: // UpdateRotationPolicy
		d.Kind = Note
		d.Reason = fmt.Sprintf("%s on watched key %s (EnableAutomaticRotation=%s, RotationInterval=%s) by %s: automatic rotations are found by the off-peak timer's version check",
			rec.EventName, ref, orNone(rec.Param("EnableAutomaticRotation")), orNone(rec.Param("RotationInterval")), actor(rec.UserIdentity))
		return d
	}
}

func decideCS(d Decision, ev events.CloudEvent, cfg config.Config, st State) Decision {
	rec := ev.Record
	ignore := func(format string, args ...any) Decision {
		d.Kind, d.Reason = Ignore, fmt.Sprintf(format, args...)
		return d
	}
	if rec.EventName != events.CSUpdateKMSEncryption {
		return ignore("CS %s does not concern rotation", rec.EventName)
	}
	cluster, err := events.CSClusterID(*rec)
	if err != nil {
		return ignore("%s: %v", rec.EventName, err)
	}
	target, ok := cfg.Target(cluster)
	if !ok {
		return ignore("cluster %s is not watched (REKEY_TARGETS)", cluster)
	}
	when, hasTime := eventTime(ev)
	body := events.CSKMSEncryption(*rec)
	if body.Disable {
		d.Kind = Alert
		d.Reason = fmt.Sprintf("%s turned Secret encryption off on watched cluster %s: alert, no run", rec.EventName, cluster)
		d.Notice = notice(ev, Warning, target.Key, []string{cluster}, eventAccount(ev), eventRegion(ev), when, hasTime)
		d.Notice.Title = fmt.Sprintf("WARNING: KMS encryption of Secrets turned off on cluster %s", cluster)
		d.Notice.Impact = "new and rewritten Secrets are stored in etcd without KMS encryption; rekey has nothing to rotate on this cluster: turn encryption back on (UpdateKMSEncryption) or remove the cluster from REKEY_TARGETS"
		return d
	}
	if body.KeyID != "" {
		ref, err := keyref.Parse(body.KeyID)
		if err != nil {
			return ignore("%s on cluster %s: kms_key_id: %v", rec.EventName, cluster, err)
		}
		if !ref.Same(target.Ref, st.Aliases) {
			d.Kind = Alert
			d.Reason = fmt.Sprintf("%s switched watched cluster %s to key %s, but REKEY_TARGETS says %s: alert, no run", rec.EventName, cluster, ref, target.Key)
			d.Notice = notice(ev, Warning, ref.String(), []string{cluster}, eventAccount(ev), eventRegion(ev), when, hasTime)
			d.Notice.Title = fmt.Sprintf("WARNING: cluster %s now encrypts Secrets with key %s, not the configured %s", cluster, ref, target.Key)
			d.Notice.Impact = fmt.Sprintf("rekey would verify the wrong key: set REKEY_TARGETS to %s=%s (the next event or timer tick then re-encrypts)", cluster, ref)
			return d
		}
	}
	if !hasTime {
		return ignore("%s on cluster %s carries no parseable time (eventTime, time, aliyunpublishtime)", rec.EventName, cluster)
	}
	if why := handled(st, target, ""); why != "" {
		return ignore("cluster %s: %s", cluster, why)
	}
	d.Kind = Rotate
	d.Jobs = []Job{{
		Cluster:   cluster,
		Key:       target.Key,
		Reason:    fmt.Sprintf("%s on cluster %s (event %s): re-encrypt every Secret", rec.EventName, cluster, ev.DedupKey()),
		NotBefore: when.Add(cfg.Settle),
		Trigger:   triggerOf(ev, when),
	}}
	d.Reason = fmt.Sprintf("%s succeeded on watched cluster %s: a full job, not before %s (event time + settle %s)",
		rec.EventName, cluster, when.Add(cfg.Settle).UTC().Format(time.RFC3339), cfg.Settle)
	return d
}

// handled says why a job for t at version is not needed ("" when it is): the version is already
// verified there, or an equivalent job is pending.
func handled(st State, t config.Target, version string) string {
	key := Target{Cluster: t.Cluster, Key: t.Key}
	if version != "" && st.Verified[key] == version {
		return fmt.Sprintf("version %s already re-encrypted and verified", version)
	}
	for _, p := range st.Pending {
		if p.Cluster != t.Cluster || p.Key != t.Key {
			continue
		}
		// A pending job for the primary version ("") covers any new version; an explicit one covers itself.
		if p.Version == "" || p.Version == version {
			return fmt.Sprintf("a job for version %s is already pending", versionText(p.Version))
		}
	}
	return ""
}

// eventTime is the time of the call: the record's eventTime, else the CloudEvent time, else
// aliyunpublishtime.
func eventTime(ev events.CloudEvent) (time.Time, bool) {
	if ev.Record != nil {
		if t, err := events.ParseTime(ev.Record.EventTime); err == nil {
			return t, true
		}
	}
	if t, err := ev.EventTime(); err == nil {
		return t, true
	}
	if t, err := ev.PublishTime(); err == nil {
		return t, true
	}
	return time.Time{}, false
}

func eventAccount(ev events.CloudEvent) string {
	if ev.AliyunAccountID != "" {
		return ev.AliyunAccountID
	}
	return ev.Record.UserIdentity.AccountID
}

func eventRegion(ev events.CloudEvent) string {
	if ev.AliyunRegionID != "" {
		return ev.AliyunRegionID
	}
	return ev.Record.AcsRegion
}

func notice(ev events.CloudEvent, sev Severity, key string, clusters []string, acct, reg string, when time.Time, hasTime bool) *Notice {
	n := &Notice{
		Severity: sev,
		Key:      key,
		Clusters: clusters,
		Action:   ev.Record.EventName,
		Actor:    actor(ev.Record.UserIdentity),
		SourceIP: ev.Record.SourceIPAddress,
		Event:    ev.DedupKey(),
		RecordID: ev.Record.EventID,
		Account:  acct,
		Region:   reg,
	}
	if hasTime {
		n.Time = when.UTC()
	}
	return n
}

// StateImpact says what a key in state (not Enabled) breaks and what to do: the impact of the
// timer's key check, which sees the state and no event.
func StateImpact(state string) string {
	switch state {
	case keystate.KeyStateDisabled:
		return dangerImpact(events.KMSDisableKey)
	case keystate.KeyStatePendingDeletion:
		return dangerImpact(events.KMSScheduleKeyDeletion)
	case keystate.KeyStatePendingImport:
		return dangerImpact(events.KMSDeleteKeyMaterial)
	default:
		return "the key is " + state + ": the API servers cannot use it to decrypt or encrypt Secrets. Make it usable again now"
	}
}

func dangerImpact(name string) string {
	const breaks = "the API servers of these clusters cannot decrypt Secrets stored under this key (reads fail once their cached data keys expire or they restart) and cannot encrypt new ones"
	switch name {
	case events.KMSDisableKey:
		return breaks + ". Re-enable the key (EnableKey) now; rekey will not run on a disabled key"
	case events.KMSScheduleKeyDeletion:
		return "when the pending window ends the key is deleted and every Secret encrypted under it is lost for good; until then " + breaks + ". Cancel the deletion (CancelKeyDeletion) now"
	default: // DeleteKeyMaterial
		return "the key's imported material is gone: " + breaks + ". Import the same key material again (ImportKeyMaterial)"
	}
}

func recoveryImpact(name string) string {
	if name == events.KMSCancelKeyDeletion {
		return "the key's deletion is cancelled; check that it is Enabled (a cancelled deletion leaves it Disabled until EnableKey)"
	}
	return "the key is enabled again: the API servers can encrypt and decrypt with it"
}

// actor describes who made a call, from userIdentity (no access key ID: it is a credential's name).
func actor(id actiontrail.Identity) string {
	var name string
	switch {
	case id.RoleName() != "":
		name = "role " + id.RoleName()
		if id.PrincipalID != "" {
			name += " (" + id.PrincipalID + ")"
		}
	case id.UserName != "":
		name = id.UserName
	case id.PrincipalID != "":
		name = "principal " + id.PrincipalID
	default:
		name = "unknown caller"
	}
	if id.Type != "" {
		name = id.Type + " " + name
	}
	if id.AccountID != "" {
		name += " of account " + id.AccountID
	}
	return name
}

func clusterIDs(ts []config.Target) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Cluster)
	}
	sort.Strings(out)
	return out
}

func versionText(v string) string {
	if v == "" {
		return "(primary at run time)"
	}
	return v
}

func orNone(s string) string {
	if s == "" {
		return "(unset)"
	}
	return s
}
