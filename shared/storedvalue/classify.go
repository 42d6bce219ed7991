package storedvalue

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Value prefixes, from k8s.io/apiserver pkg/server/options/encryptionconfig/config.go and
// k8s.io/apimachinery pkg/runtime/serializer/protobuf.
var (
	protobufMagic   = []byte("k8s\x00")
	encPrefix       = []byte("k8s:enc:")
	aesCBCPrefix    = []byte("k8s:enc:aescbc:v1:")
	aesGCMPrefix    = []byte("k8s:enc:aesgcm:v1:")
	secretboxPrefix = []byte("k8s:enc:secretbox:v1:")
	kmsV1Prefix     = []byte("k8s:enc:kms:v1:")
	kmsV2Prefix     = []byte("k8s:enc:kms:v2:")
)

// Ciphertext sizes below which the API server's transformers (k8s.io/apiserver
// pkg/storage/value/encrypt/{aes,secretbox}) cannot read a value.
const (
	aesBlockSize    = 16 // AES-CBC: a 16-byte IV, then whole blocks, at least one (PKCS#7 padding)
	gcmNonceSize    = 12 // AES-GCM: nonce, then ciphertext and a 16-byte tag
	gcmTagSize      = 16
	secretboxNonce  = 24 // secretbox: nonce, then ciphertext and a 16-byte Poly1305 tag
	secretboxTag    = 16
	kmsV1DEKLenSize = 2 // KMS v1: big-endian uint16 length of the encrypted DEK
)

// Classify reports which provider, key and (for KMS v2) key ID wrote raw, a value as stored in
// etcd. It reads only the envelope and decrypts nothing.
//
// Identity values are protobuf (starting "k8s\x00") or JSON (starting "{"). A value with no known
// prefix yields an error wrapping ErrUnrecognised; a truncated or corrupt envelope yields one
// wrapping ErrMalformed. Errors name the provider and key, never value bytes or KMS key IDs.
func Classify(raw []byte) (Value, error) {
	switch {
	case len(raw) == 0:
		return Value{}, fmt.Errorf("empty value: %w", ErrUnrecognised)
	case bytes.HasPrefix(raw, protobufMagic), raw[0] == '{':
		return Value{Provider: Identity}, nil
	case bytes.HasPrefix(raw, aesCBCPrefix):
		return classifyAESCBC(raw[len(aesCBCPrefix):])
	case bytes.HasPrefix(raw, aesGCMPrefix):
		return classifyAESGCM(raw[len(aesGCMPrefix):])
	case bytes.HasPrefix(raw, secretboxPrefix):
		return classifySecretbox(raw[len(secretboxPrefix):])
	case bytes.HasPrefix(raw, kmsV1Prefix):
		return classifyKMSv1(raw[len(kmsV1Prefix):])
	case bytes.HasPrefix(raw, kmsV2Prefix):
		return classifyKMSv2(raw[len(kmsV2Prefix):])
	case bytes.HasPrefix(raw, encPrefix):
		return Value{}, fmt.Errorf("encryption prefix %s of an unknown provider: %w", describeEncPrefix(raw), ErrUnrecognised)
	default:
		return Value{}, fmt.Errorf("no identity or encryption prefix: %w", ErrUnrecognised)
	}
}

func classifyAESCBC(rest []byte) (Value, error) {
	name, ct, err := splitKeyName(AESCBC, rest)
	if err != nil {
		return Value{}, err
	}
	if len(ct) < 2*aesBlockSize || len(ct)%aesBlockSize != 0 {
		return Value{}, fmt.Errorf("aescbc key %q: ciphertext is %d bytes, want a %d-byte IV and at least one whole %d-byte block: %w",
			name, len(ct), aesBlockSize, aesBlockSize, ErrMalformed)
	}
	return Value{Provider: AESCBC, KeyName: name}, nil
}

func classifyAESGCM(rest []byte) (Value, error) {
	name, ct, err := splitKeyName(AESGCM, rest)
	if err != nil {
		return Value{}, err
	}
	if len(ct) < gcmNonceSize+gcmTagSize {
		return Value{}, fmt.Errorf("aesgcm key %q: ciphertext is %d bytes, want at least a %d-byte nonce and a %d-byte tag: %w",
			name, len(ct), gcmNonceSize, gcmTagSize, ErrMalformed)
	}
	return Value{Provider: AESGCM, KeyName: name}, nil
}

func classifySecretbox(rest []byte) (Value, error) {
	name, ct, err := splitKeyName(Secretbox, rest)
	if err != nil {
		return Value{}, err
	}
	if len(ct) < secretboxNonce+secretboxTag {
		return Value{}, fmt.Errorf("secretbox key %q: ciphertext is %d bytes, want at least a %d-byte nonce and a %d-byte tag: %w",
			name, len(ct), secretboxNonce, secretboxTag, ErrMalformed)
	}
	return Value{Provider: Secretbox, KeyName: name}, nil
}

// classifyKMSv1 checks the KMS v1 envelope: a big-endian uint16 DEK length, the encrypted DEK,
// then the encrypted data (k8s.io/apiserver pkg/storage/value/encrypt/envelope).
func classifyKMSv1(rest []byte) (Value, error) {
	name, body, err := splitKeyName(KMSv1, rest)
	if err != nil {
		return Value{}, err
	}
	if len(body) < kmsV1DEKLenSize {
		return Value{}, fmt.Errorf("kms-v1 provider %q: %d bytes after the prefix, want a %d-byte DEK length: %w",
			name, len(body), kmsV1DEKLenSize, ErrMalformed)
	}
	dekLen := int(binary.BigEndian.Uint16(body))
	body = body[kmsV1DEKLenSize:]
	switch {
	case dekLen == 0:
		return Value{}, fmt.Errorf("kms-v1 provider %q: encrypted DEK is empty: %w", name, ErrMalformed)
	case dekLen > len(body):
		return Value{}, fmt.Errorf("kms-v1 provider %q: encrypted DEK length is %d but only %d bytes follow: %w",
			name, dekLen, len(body), ErrMalformed)
	case dekLen == len(body):
		return Value{}, fmt.Errorf("kms-v1 provider %q: no encrypted data after the %d-byte DEK: %w", name, dekLen, ErrMalformed)
	}
	return Value{Provider: KMSv1, KeyName: name}, nil
}

func classifyKMSv2(rest []byte) (Value, error) {
	name, body, err := splitKeyName(KMSv2, rest)
	if err != nil {
		return Value{}, err
	}
	o, err := decodeEncryptedObject(body)
	if err != nil {
		return Value{}, fmt.Errorf("kms-v2 provider %q: decode EncryptedObject: %w: %w", name, err, ErrMalformed)
	}
	if err := o.validate(); err != nil {
		return Value{}, fmt.Errorf("kms-v2 provider %q: invalid EncryptedObject: %w: %w", name, err, ErrMalformed)
	}
	return Value{
		Provider:      KMSv2,
		KeyName:       name,
		KeyID:         o.keyID,
		DEKSourceType: o.dekSourceTypeName(),
		Annotations:   o.annotationKeys(),
	}, nil
}

// splitKeyName splits "<name>:<rest>" at the first colon. KMS v2 provider names cannot hold a
// colon; the names of aescbc, aesgcm and secretbox keys and KMS v1 providers can, and a value
// written under such a name is reported with the part of the name before its first colon.
// A name must be non-empty UTF-8 without control characters, so a corrupt value cannot smuggle
// its bytes into a Class or an error.
func splitKeyName(p Provider, rest []byte) (string, []byte, error) {
	i := bytes.IndexByte(rest, ':')
	switch {
	case i < 0:
		return "", nil, fmt.Errorf("%s value: no ':' ends the key name: %w", p, ErrMalformed)
	case i == 0:
		return "", nil, fmt.Errorf("%s value: empty key name: %w", p, ErrMalformed)
	}
	name := rest[:i]
	if !printableName(name) {
		return "", nil, fmt.Errorf("%s value: key name of %d bytes is not printable UTF-8: %w", p, len(name), ErrMalformed)
	}
	return string(name), rest[i+1:], nil
}

func printableName(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return false
		}
	}
	return true
}

// describeEncPrefix names the "<provider>:<version>" of an unknown `k8s:enc:` prefix when both
// are short lowercase words, and says "k8s:enc:" otherwise, so an error never quotes value bytes.
func describeEncPrefix(raw []byte) string {
	rest := raw[len(encPrefix):]
	parts := bytes.SplitN(rest, []byte(":"), 3)
	if len(parts) == 3 && isWord(parts[0]) && isWord(parts[1]) {
		return fmt.Sprintf("%q", "k8s:enc:"+string(parts[0])+":"+string(parts[1])+":")
	}
	return `"k8s:enc:"`
}

func isWord(b []byte) bool {
	if len(b) == 0 || len(b) > 16 {
		return false
	}
	for _, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
