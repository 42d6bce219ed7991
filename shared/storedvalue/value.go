package storedvalue

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// Provider names the encryption provider that wrote a stored value.
type Provider string

// The providers of an EncryptionConfiguration, as they show in stored values.
const (
	Identity  Provider = "identity"
	AESCBC    Provider = "aescbc"
	AESGCM    Provider = "aesgcm"
	Secretbox Provider = "secretbox"
	KMSv1     Provider = "kms-v1"
	KMSv2     Provider = "kms-v2"
)

// The KMS v2 EncryptedObject encryptedDEKSourceType values, as Value.DEKSourceType spells them.
const (
	DEKSourceAESGCMKey  = "AES_GCM_KEY"
	DEKSourceHKDFSHA256 = "HKDF_SHA256_XNONCE_AES_GCM_SEED"
)

var (
	// ErrUnrecognised is wrapped by every Classify error about a value that carries no known
	// prefix: neither identity (protobuf or JSON) nor a `k8s:enc:` prefix of a known provider.
	ErrUnrecognised = errors.New("unrecognised stored value")
	// ErrMalformed is wrapped by every Classify error about a value whose prefix is known but
	// whose envelope is truncated or corrupt, so the API server could not read it either.
	ErrMalformed = errors.New("malformed stored value")
)

// Value describes one stored value; it never holds data or key material.
type Value struct {
	Provider      Provider
	KeyName       string   // aescbc/aesgcm/secretbox key name, or the KMS provider name (kms-v1, kms-v2)
	KeyID         string   // KMS v2 only: the EncryptedObject keyID
	DEKSourceType string   // KMS v2 only: "AES_GCM_KEY" or "HKDF_SHA256_XNONCE_AES_GCM_SEED"
	Annotations   []string // KMS v2 only: sorted annotation keys (never values)
}

// Class returns a stable label for counting: "identity", "aescbc:key2", "kms-v1:NAME",
// "kms-v2:NAME:KEYID". It holds the full KMS v2 key ID; use RedactedClass where the label is
// logged. The zero Value's class is "".
func (v Value) Class() string {
	switch v.Provider {
	case "":
		return ""
	case Identity:
		return string(Identity)
	case KMSv2:
		return string(KMSv2) + ":" + v.KeyName + ":" + v.KeyID
	default:
		return string(v.Provider) + ":" + v.KeyName
	}
}

// RedactedClass is Class with a KMS v2 key ID replaced by HashKeyID of it
// ("kms-v2:NAME:sha256:0123456789abcdef"), for logs and errors.
func (v Value) RedactedClass() string {
	if v.Provider == KMSv2 {
		return string(KMSv2) + ":" + v.KeyName + ":" + HashKeyID(v.KeyID)
	}
	return v.Class()
}

// HashKeyID returns "sha256:<first 16 hex>" of a key ID, for logs and errors (never log full key
// IDs). The 16 hex digits are a prefix of the full hash that the API server's
// apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds metric shows. Like the
// API server's GetHashIfNotEmpty, it returns "" for an empty key ID.
func HashKeyID(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:8])
}
