package kms

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Key states reported in KeyMetadata.State.
const (
	// KeyStateEnabled keys can encrypt and decrypt.
	KeyStateEnabled = "Enabled"
	// KeyStateDisabled keys refuse every cryptographic operation until enabled again.
	KeyStateDisabled = "Disabled"
	// KeyStatePendingDeletion keys refuse every cryptographic operation and will be deleted at
	// KeyMetadata.DeleteDate unless the deletion is cancelled.
	KeyStatePendingDeletion = "PendingDeletion"
	// KeyStatePendingImport keys (external origin) have no key material yet.
	KeyStatePendingImport = "PendingImport"
)

// Client is the part of KMS rekey uses. Implementations are safe for concurrent use.
type Client interface {
	// DescribeKey returns a key's metadata. keyID may be a key ID, an alias ("alias/<name>") or an
	// ARN.
	DescribeKey(ctx context.Context, keyID string) (KeyMetadata, error)
	// ListKeyVersions returns every version of a key, all pages, in the order KMS lists them.
	ListKeyVersions(ctx context.Context, keyID string) ([]KeyVersion, error)
	// Encrypt encrypts plaintext under the key's primary version. encCtx, when not empty, must be
	// given again to Decrypt.
	Encrypt(ctx context.Context, keyID string, plaintext []byte, encCtx map[string]string) (EncryptResult, error)
	// Decrypt decrypts a ciphertext blob made by Encrypt or GenerateDataKey. The blob names its key
	// and version, so no key ID is needed.
	Decrypt(ctx context.Context, blob string, encCtx map[string]string) (DecryptResult, error)
	// GenerateDataKey returns a fresh AES-256 data key in plaintext and encrypted under the key's
	// primary version.
	GenerateDataKey(ctx context.Context, keyID string) (DataKey, error)
}

// KeyMetadata describes a KMS key as DescribeKey reports it. Dates KMS leaves empty (or sends in a
// form that cannot be parsed) are the zero time.
type KeyMetadata struct {
	// KeyID is the key's globally unique ID.
	KeyID string
	// Arn is "acs:kms:<region>:<account>:key/<KeyID>".
	Arn string
	// State is one of the KeyState constants.
	State string
	// KeySpec is the key type, e.g. "Aliyun_AES_256".
	KeySpec string
	// KeyUsage is e.g. "ENCRYPT/DECRYPT".
	KeyUsage string
	// ProtectionLevel is "SOFTWARE" or "HSM".
	ProtectionLevel string
	// Origin is "Aliyun_KMS" or "EXTERNAL".
	Origin string
	// Creator is the account that created the key.
	Creator string
	// Description is the key's free-text description.
	Description string
	// DKMSInstanceID names the dedicated KMS instance holding the key, if any.
	DKMSInstanceID string
	// PrimaryKeyVersion is the version Encrypt and GenerateDataKey use now.
	PrimaryKeyVersion string
	// AutomaticRotation is "Enabled", "Disabled" or "Suspended".
	AutomaticRotation string
	// RotationInterval is the automatic rotation period as KMS spells it, e.g. "31536000s".
	RotationInterval string
	// CreationDate is when the key was created.
	CreationDate time.Time
	// LastRotationDate is when the current primary version was created.
	LastRotationDate time.Time
	// NextRotationDate is when automatic rotation will next create a version.
	NextRotationDate time.Time
	// DeleteDate is when a PendingDeletion key will be deleted.
	DeleteDate time.Time
}

// Enabled reports whether the key can be used for cryptographic operations.
func (m KeyMetadata) Enabled() bool { return m.State == KeyStateEnabled }

// RotationPeriod parses RotationInterval ("<seconds>s"). ok is false when automatic rotation has no
// interval or the interval cannot be parsed.
func (m KeyMetadata) RotationPeriod() (period time.Duration, ok bool) {
	s, found := strings.CutSuffix(strings.TrimSpace(m.RotationInterval), "s")
	if !found || s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > int64(1<<63-1)/int64(time.Second) {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// KeyVersion is one version of a key.
type KeyVersion struct {
	// KeyID is the key the version belongs to.
	KeyID string
	// KeyVersionID is the version's globally unique ID.
	KeyVersionID string
	// CreationDate is when the version was created (the rotation time).
	CreationDate time.Time
}

// EncryptResult is the answer to Encrypt.
type EncryptResult struct {
	// KeyID is the key that encrypted.
	KeyID string
	// KeyVersionID is the key version that encrypted (the primary version at the time).
	KeyVersionID string
	// CiphertextBlob is the base64 ciphertext to give to Decrypt.
	CiphertextBlob string
}

// String describes the result without the ciphertext, so it is safe to log.
func (r EncryptResult) String() string {
	return fmt.Sprintf("EncryptResult{KeyID:%s KeyVersionID:%s CiphertextBlob:<%d bytes>}",
		Redact(r.KeyID), Redact(r.KeyVersionID), len(r.CiphertextBlob))
}

// GoString is String, so %#v does not print the ciphertext either.
func (r EncryptResult) GoString() string { return r.String() }

// DecryptResult is the answer to Decrypt.
type DecryptResult struct {
	// KeyID is the key named by the blob.
	KeyID string
	// KeyVersionID is the key version named by the blob.
	KeyVersionID string
	// Plaintext is the decrypted data.
	Plaintext []byte
}

// String describes the result without the plaintext, so it is safe to log.
func (r DecryptResult) String() string {
	return fmt.Sprintf("DecryptResult{KeyID:%s KeyVersionID:%s Plaintext:<%d bytes>}",
		Redact(r.KeyID), Redact(r.KeyVersionID), len(r.Plaintext))
}

// GoString is String, so %#v does not print the plaintext either.
func (r DecryptResult) GoString() string { return r.String() }

// DataKey is the answer to GenerateDataKey.
type DataKey struct {
	// KeyID is the key that encrypted the data key.
	KeyID string
	// KeyVersionID is the key version that encrypted the data key.
	KeyVersionID string
	// CiphertextBlob is the encrypted data key (base64), for Decrypt.
	CiphertextBlob string
	// Plaintext is the 32-byte data key. Do not keep it longer than needed.
	Plaintext []byte
}

// String describes the data key without its secret parts, so it is safe to log.
func (k DataKey) String() string {
	return fmt.Sprintf("DataKey{KeyID:%s KeyVersionID:%s CiphertextBlob:<%d bytes> Plaintext:<%d bytes>}",
		Redact(k.KeyID), Redact(k.KeyVersionID), len(k.CiphertextBlob), len(k.Plaintext))
}

// GoString is String, so %#v does not print the data key either.
func (k DataKey) GoString() string { return k.String() }

// parseTime reads a KMS date ("2006-01-02T15:04:05Z"; some APIs add fractions or an offset).
// Empty or malformed dates are the zero time: no date field is worth failing a call for.
func parseTime(s string) time.Time {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}
