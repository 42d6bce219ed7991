package verify

import (
	"fmt"
	"sort"
	"strings"

	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// RetirementVerdict says whether the key versions older than the primary may be retired.
type RetirementVerdict string

// Retirement verdicts.
const (
	// RetireSafe: a complete etcd scan found no stored object under any version but the primary.
	RetireSafe RetirementVerdict = "safe"
	// RetireNotSafe: objects still depend on an older version (or on the key with an unknown
	// version, KMS v1), or values could not be classified.
	RetireNotSafe RetirementVerdict = "not-safe"
	// RetireCannotTell: no storage evidence (no etcd scan, or an incomplete or empty one), or no
	// known primary version. Nothing says the old versions are unused: treat it as not safe.
	RetireCannotTell RetirementVerdict = "cannot-tell"
)

// Evidence kinds of a Retirement.
const (
	RetireEvidenceStorage     = "storage"
	RetireEvidenceConvergence = "convergence"
	RetireEvidenceNone        = "none"
)

// Retirement says how many stored objects still depend on each key version older than the primary,
// and whether it is safe to retire them: to disable the key or schedule its deletion once the
// cluster no longer uses it (after a switch to another key), or to let old versions go. Disabling
// the key the cluster encrypts with is never safe, whatever the verdict: Current objects depend on
// its primary version.
type Retirement struct {
	Verdict RetirementVerdict `json:"verdict"`
	// Safe is Verdict == RetireSafe.
	Safe bool `json:"safe"`
	// Evidence is where the counts come from: storage (an etcd scan of every resource),
	// convergence (the API only) or none.
	Evidence string `json:"evidence"`
	// Primary is the key version objects must be under ("" when unknown).
	Primary string `json:"primary,omitempty"`
	// ByVersion counts the stored objects under each KMS v2 key ID other than Primary (storage
	// evidence only): each such version is still needed to read them.
	ByVersion map[string]int `json:"byVersion,omitempty"`
	// Current counts the objects under Primary (storage evidence only).
	Current int `json:"current"`
	// KMSv1 counts objects written by a KMS v1 provider: they depend on the key, in a version the
	// stored value does not record. Unreadable counts values that could not be classified.
	KMSv1      int `json:"kmsV1,omitempty"`
	Unreadable int `json:"unreadable,omitempty"`
	// Listed and Rewritten are the convergence pass's counts when only the API was available.
	Listed    int64 `json:"listed,omitempty"`
	Rewritten int64 `json:"rewritten,omitempty"`
	// Reason says it plainly, in one sentence or two.
	Reason string `json:"reason"`
}

// Dependent returns the number of objects known to depend on a version other than the primary
// (old versions, KMS v1, unreadable), or -1 when there is no storage evidence.
func (r Retirement) Dependent() int {
	if r.Evidence != RetireEvidenceStorage {
		return -1
	}
	n := r.KMSv1 + r.Unreadable
	for _, c := range r.ByVersion {
		n += c
	}
	return n
}

// retirement judges the retirement of old key versions from the report's storage scans (complete
// when one scan per resource succeeded), else from its convergence pass.
func retirement(r Report, primary string, resources int) (ret Retirement) {
	ret = Retirement{Primary: primary, Evidence: RetireEvidenceNone, Verdict: RetireCannotTell}
	defer func() { ret.Safe = ret.Verdict == RetireSafe }()
	switch {
	case r.Layer(LayerStorage).Status != Skip && len(r.Storage) == resources && resources > 0:
		ret.Evidence = RetireEvidenceStorage
		return storageRetirement(ret, r.Storage)
	case r.Convergence != nil:
		ret.Evidence = RetireEvidenceConvergence
		return convergenceRetirement(ret, *r.Convergence)
	}
	ret.Reason = "cannot tell: no storage evidence (no etcd scan): nothing shows that no Secret is still under an older key version; " +
		"do NOT disable the key or schedule its deletion on this basis (give etcd access for a storage scan)"
	return ret
}

func storageRetirement(ret Retirement, scans []etcdscan.Report) Retirement {
	total := 0
	for _, s := range scans {
		total += s.Total
		ret.Unreadable += s.Unreadable
		for class, n := range s.ByClass {
			switch {
			case strings.HasPrefix(class, string(storedvalue.KMSv2)+":"):
				_, keyID := kmsV2KeyID(class)
				if keyID == ret.Primary && ret.Primary != "" {
					ret.Current += n
					continue
				}
				if ret.ByVersion == nil {
					ret.ByVersion = map[string]int{}
				}
				ret.ByVersion[keyID] += n
			case strings.HasPrefix(class, string(storedvalue.KMSv1)+":"):
				ret.KMSv1 += n
			}
			// identity, aescbc, aesgcm, secretbox: no KMS key involved.
		}
	}
	where := fmt.Sprintf("etcd scan of %d values", total)
	switch {
	case total == 0:
		ret.Verdict = RetireCannotTell
		ret.Reason = "cannot tell: the etcd scan found no value, which proves nothing; do NOT disable the key or schedule its deletion on this basis"
	case ret.Primary == "":
		ret.Verdict = RetireCannotTell
		ret.Reason = fmt.Sprintf("cannot tell: the primary key version is unknown (no KMS key given), so no version can be called old; stored KMS v2 key IDs: %s (%s)",
			joinCounts(ret.ByVersion, "="), where)
	case ret.Dependent() > 0:
		ret.Verdict = RetireNotSafe
		var parts []string
		if len(ret.ByVersion) > 0 {
			parts = append(parts, fmt.Sprintf("%s under older key versions (%s)", plural(sum(ret.ByVersion), "object"), joinCounts(ret.ByVersion, ": ")))
		}
		if ret.KMSv1 > 0 {
			parts = append(parts, fmt.Sprintf("%s written by KMS v1 (the version is not recorded)", plural(ret.KMSv1, "object")))
		}
		if ret.Unreadable > 0 {
			parts = append(parts, fmt.Sprintf("%s that could not be classified", plural(ret.Unreadable, "value")))
		}
		ret.Reason = fmt.Sprintf("NOT safe to disable the key or schedule its deletion: %s still depend on it (%s); re-encrypt them first (rekey run), then verify again",
			strings.Join(parts, ", "), where)
	default:
		ret.Verdict = RetireSafe
		ret.Reason = fmt.Sprintf("no stored object depends on a key version older than %s (%s): older versions are no longer needed by these resources. "+
			"The key itself still encrypts %s under %s: do not disable it or schedule its deletion while the cluster uses it",
			ret.Primary, where, plural(ret.Current, "object"), ret.Primary)
	}
	return ret
}

func convergenceRetirement(ret Retirement, s reencrypt.Summary) Retirement {
	ret.Listed, ret.Rewritten = s.Total.Listed, s.Total.Rewritten
	ret.Reason = fmt.Sprintf("cannot tell: no storage evidence. The API does not say which key version encrypts a stored object; its best answer is the "+
		"convergence pass, which found %d of %d objects stale (now rewritten) and %d failed or not attempted: it shows what the API servers that served it "+
		"saw, not what etcd holds. Do NOT disable the key or schedule its deletion on this basis (give etcd access for a storage scan)",
		s.Total.Rewritten, s.Total.Listed, s.Total.Failed+s.Total.NotAttempted)
	return ret
}

// kmsV2KeyID splits "kms-v2:NAME:KEYID" (provider names hold no colon, key IDs may).
func kmsV2KeyID(class string) (name, keyID string) {
	rest := strings.TrimPrefix(class, string(storedvalue.KMSv2)+":")
	name, keyID, _ = strings.Cut(rest, ":")
	return name, keyID
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// writeRetirement appends the retirement block of the text report.
func writeRetirement(b *strings.Builder, r *Retirement) {
	if r == nil {
		return
	}
	head := map[RetirementVerdict]string{RetireSafe: "SAFE (old versions)", RetireNotSafe: "NOT SAFE", RetireCannotTell: "CANNOT TELL (not safe)"}[r.Verdict]
	fmt.Fprintf(b, "retirement: %s, evidence %s\n", head, r.Evidence)
	if len(r.ByVersion) > 0 {
		keys := make([]string, 0, len(r.ByVersion))
		for k := range r.ByVersion {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(b, "    - %s: %s still depend on it\n", k, plural(r.ByVersion[k], "object"))
		}
	}
	fmt.Fprintf(b, "    - %s\n", r.Reason)
}
