package storagemode

import (
	"fmt"
	"strings"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// Rotation is a key rotation a pass follows, as far as rekey knows: --kms-key-id named the key and
// KMS reported its primary version. Without one there is no known rotation and Judge judges
// nothing.
type Rotation struct {
	// KeyID is the KMS key, as given.
	KeyID string `json:"keyID"`
	// PrimaryVersion is the key's primary version when the pass started.
	PrimaryVersion string `json:"primaryVersion"`
	// ProvedBefore is true when the adoption gate had direct evidence, before the pass started,
	// that the API servers encrypt with PrimaryVersion (an etcd canary, the KMS v2 metrics, or
	// effect canaries, in this run or recorded by an earlier one; not a settle delay). A rewrite
	// that then finds nothing stale means every object is already under PrimaryVersion.
	ProvedBefore bool `json:"provedBefore,omitempty"`
}

// StoredCheck is an etcd scan of the target resources after the pass.
type StoredCheck struct {
	// Total is the number of values scanned.
	Total int `json:"total"`
	// Current is the number that are KMS v2 values under Rotation.PrimaryVersion.
	Current int `json:"current"`
	// ByClass counts the values by storedvalue class, KMS v2 key IDs hashed.
	ByClass map[string]int `json:"byClass,omitempty"`
}

// Status is a Verdict's outcome.
type Status string

// Verdict statuses.
const (
	// StatusOK: the pass's counts are consistent with what rekey knows.
	StatusOK Status = "ok"
	// StatusSuspicious: the pass rewrote nothing after a known rotation, without evidence that the
	// objects were already current. Exit 1.
	StatusSuspicious Status = "suspicious"
	// StatusNotJudged: no known rotation (or a dry run), so 0 rewritten means nothing.
	StatusNotJudged Status = "not-judged"
)

// Verdict is Judge's result. It is JSON-serialisable.
type Verdict struct {
	Status Status `json:"status"`
	// Rule names the rule that decided: no-rotation, dry-run, rewrote, nothing-current,
	// etcd-current, etcd-stale, proved-before, zero-after-rotation.
	Rule    string `json:"rule"`
	Message string `json:"message"`
	// Causes are the likely causes of a suspicious pass, most likely first.
	Causes []string `json:"causes,omitempty"`
}

// Suspicious reports whether the verdict is StatusSuspicious.
func (v Verdict) Suspicious() bool { return v.Status == StatusSuspicious }

// PassFacts are what Judge judges.
type PassFacts struct {
	Strategy reencrypt.Strategy
	DryRun   bool
	Total    reencrypt.Counts
	// Rotation is the known rotation, nil without --kms-key-id.
	Rotation *Rotation
	// Stored is an etcd scan after the pass, nil without etcd access.
	Stored *StoredCheck
	// Decision is the strategy decision, for the evidence it carries (nil: none).
	Decision *Decision
}

// Judge applies the suspicious rule to a finished pass:
//
// A pass follows a known rotation when --kms-key-id named the key (Rotation is set) and it was
// not a dry run. Such a pass that found objects current (Current > 0) and rewrote none
// (Rewritten == 0) is suspicious, unless rekey has evidence that those objects are already under
// the key's primary version:
//   - an etcd scan after the pass shows every value of the target resources as a KMS v2 value
//     under the primary version (etcd-current); a scan that shows any other value makes the pass
//     suspicious whatever else is known (etcd-stale);
//   - or the adoption gate proved with direct evidence, before the pass, that the API servers
//     encrypt with the primary version (proved-before): a no-op write then rewrites every KMS v2
//     value under another key ID, so finding none stale means there is none. A settle delay is
//     not proof, and evidence that the cluster writes with KMS v1 voids it (a KMS v1 server never
//     finds anything stale).
//
// A pass that rewrote something, or found nothing current (nothing listed, or everything deleted
// or failed, which fails the run on its own), is not suspicious.
func Judge(f PassFacts) Verdict {
	switch {
	case f.Rotation == nil:
		return Verdict{Status: StatusNotJudged, Rule: "no-rotation", Message: "no --kms-key-id: no known rotation, so a pass that rewrites nothing is not judged"}
	case f.DryRun:
		return Verdict{Status: StatusNotJudged, Rule: "dry-run", Message: "dry run: nothing was written"}
	case f.Total.Rewritten > 0:
		return Verdict{Status: StatusOK, Rule: "rewrote", Message: fmt.Sprintf("%d objects rewritten after the rotation to key version %s", f.Total.Rewritten, f.Rotation.PrimaryVersion)}
	case f.Total.Current == 0:
		return Verdict{Status: StatusOK, Rule: "nothing-current", Message: "no object was found current: nothing to judge"}
	}
	r := f.Rotation
	kmsV1 := f.Decision != nil && f.Decision.Shows(storedvalue.KMSv1)
	if f.Stored != nil && f.Stored.Total > 0 {
		for class := range f.Stored.ByClass {
			if strings.HasPrefix(class, string(storedvalue.KMSv1)+":") {
				kmsV1 = true
			}
		}
		if f.Stored.Current == f.Stored.Total {
			return Verdict{Status: StatusOK, Rule: "etcd-current", Message: fmt.Sprintf("converged: etcd shows all %d values of the target resources under key version %s; a previous pass re-encrypted them", f.Stored.Total, r.PrimaryVersion)}
		}
		v := suspicious(f, "etcd-stale", kmsV1)
		v.Causes = append([]string{fmt.Sprintf("etcd shows %d of %d values NOT under key version %s (%s) although the API server found every object current",
			f.Stored.Total-f.Stored.Current, f.Stored.Total, r.PrimaryVersion, classList(f.Stored.ByClass))}, v.Causes...)
		return v
	}
	if r.ProvedBefore && !kmsV1 {
		return Verdict{Status: StatusOK, Rule: "proved-before", Message: fmt.Sprintf("converged: the adoption gate proved that the API servers encrypt with key version %s before the pass, and a no-op write found no object stale", r.PrimaryVersion)}
	}
	return suspicious(f, "zero-after-rotation", kmsV1)
}

func suspicious(f PassFacts, rule string, kmsV1 bool) Verdict {
	r := f.Rotation
	v := Verdict{Status: StatusSuspicious, Rule: rule,
		Message: fmt.Sprintf("suspicious: 0 rewritten after a rotation: %d objects were reported current although key %s's primary version is %s", f.Total.Current, r.KeyID, r.PrimaryVersion)}
	identity := f.Decision != nil && f.Decision.Shows(storedvalue.Identity) || f.Stored != nil && f.Stored.ByClass[string(storedvalue.Identity)] > 0
	kmsV2Only := f.Decision != nil && len(f.Decision.Writers) > 0 && !kmsV1 && !identity

	notAdopted := "the API servers have not adopted the new key version yet (they still encrypt with the old one, so nothing looks stale): wait until they do (KMS v2 plugins are polled about every minute per API server) and run again"
	v1 := "the cluster encrypts with KMS v1 (possible on 1.31+ with the KMSv1 feature gate), where a no-op write re-encrypts nothing: run again with --strategy annotate"
	uncovered := "the resources are not covered by the encryption config (stored in plain text or by a provider the rotation does not touch): check the EncryptionConfiguration's resources and providers"
	previous := "a previous run already re-encrypted them: confirm with `rekey verify` (--etcd-endpoints for the storage layer, or --convergence)"
	switch {
	case kmsV1:
		v.Causes = []string{v1, notAdopted, uncovered, previous}
	case identity:
		v.Causes = []string{uncovered, notAdopted, previous}
	case kmsV2Only:
		v.Causes = []string{notAdopted, previous, uncovered}
	default:
		v.Causes = []string{notAdopted, v1, uncovered, previous}
	}
	if kmsV1 && f.Strategy == reencrypt.Annotate {
		v.Causes = v.Causes[1:] // annotate is already the KMS v1 strategy
	}
	return v
}
