package kmsapi

import (
	"encoding/base64"
	"fmt"
)

// DescribeBlob returns the key and key version a CiphertextBlob (its base64 text, as Encrypt and
// GenerateDataKey return it) names, without decrypting it. Tests use it to prove which key
// version encrypted a value, e.g. the DEK a KMS v1 plugin stored in etcd.
func DescribeBlob(ciphertextBlob string) (keyID, versionID string, err error) {
	raw, err := base64.StdEncoding.DecodeString(ciphertextBlob)
	if err != nil {
		return "", "", fmt.Errorf("describe blob: %w", errBlobMalformed)
	}
	b, err := decodeBlob(raw)
	if err != nil {
		return "", "", fmt.Errorf("describe blob: %w", err)
	}
	return b.keyID, b.versionID, nil
}
