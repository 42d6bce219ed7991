package kms

import "github.com/rekey-dev/rekey/shared/alicloud"

// Redact shortens a key ID, key version ID, alias or ARN for errors and logs: the first few
// characters of its last segment (after the last '/' or ':'), an ellipsis and the first 8 hex digits
// of the SHA-256 of the whole reference, e.g. "3a6a…1f2e3d4c". The result is stable, so log lines
// about one key can be correlated, yet does not reveal the reference. The empty string is "<none>".
// It is alicloud.Redact.
func Redact(ref string) string { return alicloud.Redact(ref) }
