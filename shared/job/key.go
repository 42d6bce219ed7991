package job

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/verify"
)

// guard runs the verifier's kms layer and refuses a key that cannot serve the API server
// (Disabled, PendingDeletion, unknown, a failing canary): rewriting Secrets would then fail or,
// worse, be what turns a disabled key into an outage. Spec.Force runs anyway with a warning.
func (r *runner) guard(ctx context.Context) (Outcome, bool) {
	if r.spec.KeyID == "" {
		return Outcome{}, false
	}
	l, _ := verify.CheckKey(ctx, r.deps.KMS, r.spec.KeyID)
	if l.Status != verify.Fail {
		return Outcome{}, false
	}
	reasons := strings.Join(l.Problems, "; ")
	if r.spec.Force {
		r.say(true, "warning: KMS key check failed, running anyway (--force): %s", reasons)
		return Outcome{}, false
	}
	r.log.Warn().Str("key", r.spec.KeyID).Str("reason", reasons).Msg("KMS guard refused the key")
	return Outcome{Status: StatusRefused, Reason: reasons}, true
}

// primaryVersion reads the key's primary version (the version the job brings every object to).
func (r *runner) primaryVersion(ctx context.Context) (string, error) {
	m, err := r.deps.KMS.DescribeKey(ctx, r.spec.KeyID)
	if err != nil {
		return "", fmt.Errorf("read the primary version of key %s: %w", r.spec.KeyID, err)
	}
	if m.PrimaryKeyVersion == "" {
		return "", fmt.Errorf("key %s reports no primary version", r.spec.KeyID)
	}
	return m.PrimaryKeyVersion, nil
}

// keyVersions returns the key's primary version, the version created just before it ("" when it
// cannot be told) and when the primary was created.
func keyVersions(ctx context.Context, c kms.Client, keyID string) (primary, predecessor string, created time.Time, err error) {
	m, err := c.DescribeKey(ctx, keyID)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("read the primary version of key %s: %w", keyID, err)
	}
	if m.PrimaryKeyVersion == "" {
		return "", "", time.Time{}, fmt.Errorf("key %s reports no primary version", keyID)
	}
	versions, err := c.ListKeyVersions(ctx, keyID)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("list the versions of key %s: %w", keyID, err)
	}
	predecessor, created = predecessorOf(versions, m.PrimaryKeyVersion)
	if created.IsZero() {
		created = m.LastRotationDate
	}
	return m.PrimaryKeyVersion, predecessor, created, nil
}

// predecessorOf returns the version created last before primary ("" when there is none or two
// share its creation time) and primary's creation time.
func predecessorOf(versions []kms.KeyVersion, primary string) (string, time.Time) {
	var created time.Time
	for _, v := range versions {
		if v.KeyVersionID == primary {
			created = v.CreationDate
		}
	}
	if created.IsZero() {
		return "", time.Time{}
	}
	var before []kms.KeyVersion
	for _, v := range versions {
		if v.KeyVersionID != primary && v.CreationDate.Before(created) {
			before = append(before, v)
		}
	}
	if len(before) == 0 {
		return "", created
	}
	sort.SliceStable(before, func(i, j int) bool { return before[i].CreationDate.Before(before[j].CreationDate) })
	last := before[len(before)-1]
	if len(before) > 1 && before[len(before)-2].CreationDate.Equal(last.CreationDate) {
		return "", created
	}
	return last.KeyVersionID, created
}
