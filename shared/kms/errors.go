package kms

import (
	"github.com/rekey-dev/rekey/shared/alicloud"
)

// Error codes KMS answers with that rekey acts on.
const (
	// CodeKeyNotFound means no key has the given ID or ARN (404).
	CodeKeyNotFound = "Forbidden.KeyNotFound"
	// CodeAliasNotFound means no key has the given alias (404).
	CodeAliasNotFound = "Forbidden.AliasNotFound"
	// CodeKeyVersionNotFound means the key has no such version (404).
	CodeKeyVersionNotFound = "Forbidden.KeyVersionNotFound"
	// CodeKeyDisabled means the key is Disabled (409).
	CodeKeyDisabled = "Rejected.Disabled"
	// CodeKeyPendingDeletion means the key is PendingDeletion (409).
	CodeKeyPendingDeletion = "Rejected.PendingDeletion"
	// CodeThrottling means the account's KMS QPS quota is exhausted (429).
	CodeThrottling = "Rejected.Throttling"
)

// APIError is an error answer from KMS (an SDK *errors.ServerError) with a message that is safe to
// log: one line, bounded, without the string-to-sign the gateway echoes on signature errors, and
// with the key references of the call redacted. errors.As still finds the SDK's *errors.ServerError
// through Unwrap. It is alicloud.APIError.
type APIError = alicloud.APIError

// NewAPIError makes the error KMS would answer with (for fakes and tests). It wraps a real SDK
// *errors.ServerError, so ErrorCode and the Is* helpers treat it like one from the SDK.
func NewAPIError(status int, code, message string) *APIError {
	return alicloud.NewAPIError(status, code, message)
}

// ErrorCode returns the KMS error code carried by err (an APIError or an SDK *errors.ServerError
// anywhere in its chain), or "" when there is none.
func ErrorCode(err error) string { return alicloud.ErrorCode(err) }

// IsKeyNotFound reports whether err says the key (by ID, ARN or alias) does not exist.
func IsKeyNotFound(err error) bool {
	c := ErrorCode(err)
	return c == CodeKeyNotFound || c == CodeAliasNotFound
}

// IsKeyVersionNotFound reports whether err says the key version does not exist.
func IsKeyVersionNotFound(err error) bool { return ErrorCode(err) == CodeKeyVersionNotFound }

// IsKeyDisabled reports whether err says the key is Disabled.
func IsKeyDisabled(err error) bool { return ErrorCode(err) == CodeKeyDisabled }

// IsKeyPendingDeletion reports whether err says the key is PendingDeletion.
func IsKeyPendingDeletion(err error) bool { return ErrorCode(err) == CodeKeyPendingDeletion }

// IsThrottled reports whether err says the KMS request quota is exhausted.
func IsThrottled(err error) bool { return alicloud.IsThrottlingCode(ErrorCode(err)) }
