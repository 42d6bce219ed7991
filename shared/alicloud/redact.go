package alicloud

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// redactPrefix is how many characters of a reference Redact keeps.
const redactPrefix = 4

// Redact shortens a resource reference (a KMS key ID, key version ID, alias or ARN, an AccessKey
// ID) for errors and logs: the first few characters of its last segment (after the last '/' or
// ':'), an ellipsis and the first 8 hex digits of the SHA-256 of the whole reference, e.g.
// "3a6a…1f2e3d4c". The result is stable, so log lines about one resource can be correlated, yet
// does not reveal the reference. The empty string is "<none>".
func Redact(ref string) string {
	if ref == "" {
		return "<none>"
	}
	sum := sha256.Sum256([]byte(ref))
	last := ref
	if i := strings.LastIndexAny(ref, "/:"); i >= 0 && i < len(ref)-1 {
		last = ref[i+1:]
	}
	prefix := []rune(last)
	if len(prefix) > redactPrefix {
		prefix = prefix[:redactPrefix]
	}
	// Never keep more than half of a short reference.
	if n := len([]rune(ref)); len(prefix)*2 > n {
		prefix = prefix[:n/2]
	}
	return string(prefix) + "…" + hex.EncodeToString(sum[:4])
}
