package kmsapi

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Ciphertext blob format, version 1 (the CiphertextBlob parameter is its
// standard base64):
//
//	offset      size  field
//	0           3     magic "RKB"
//	3           1     format version, 0x01
//	4           1     k = length of the key ID (1..255)
//	5           k     key ID
//	5+k         1     v = length of the key version ID (1..255)
//	6+k         v     key version ID
//	6+k+v       12    AES-GCM nonce
//	18+k+v      n+16  AES-GCM(plaintext) followed by its 16-byte tag
//
// The additional authenticated data is bytes [0, 6+k+v) (magic through
// version ID) followed by the canonical EncryptionContext, so changing the
// named key or version, or decrypting with another context, fails
// authentication.
const (
	blobMagic   = "RKB"
	blobFormat  = 0x01
	nonceSize   = 12
	tagSize     = 16
	blobMinSize = len(blobMagic) + 1 + 1 + 1 + 1 + 1 + nonceSize + tagSize
)

var (
	errBlobMalformed = errors.New("ciphertext blob is malformed")
	errBlobAuth      = errors.New("ciphertext blob failed authentication")
)

// blob is a decoded ciphertext blob.
type blob struct {
	keyID     string
	versionID string
	header    []byte // magic through version ID; the AAD prefix
	nonce     []byte
	sealed    []byte
}

// sealBlob encrypts plaintext under material (an AES key) and returns the
// encoded blob naming keyID and versionID.
func sealBlob(keyID, versionID string, material, plaintext, context []byte) ([]byte, error) {
	if len(keyID) == 0 || len(keyID) > 255 || len(versionID) == 0 || len(versionID) > 255 {
		return nil, fmt.Errorf("seal blob: key or version ID length out of range: %w", errBlobMalformed)
	}
	aead, err := newGCM(material)
	if err != nil {
		return nil, fmt.Errorf("seal blob: %w", err)
	}
	var header bytes.Buffer
	header.WriteString(blobMagic)
	header.WriteByte(blobFormat)
	header.WriteByte(byte(len(keyID)))
	header.WriteString(keyID)
	header.WriteByte(byte(len(versionID)))
	header.WriteString(versionID)
	nonce := make([]byte, nonceSize)
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, fmt.Errorf("seal blob: read nonce: %w", err)
	}
	out := make([]byte, 0, header.Len()+nonceSize+len(plaintext)+tagSize)
	out = append(out, header.Bytes()...)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, aad(header.Bytes(), context)), nil
}

// decodeBlob splits an encoded blob into its fields without decrypting it.
func decodeBlob(b []byte) (blob, error) {
	if len(b) < blobMinSize || string(b[:len(blobMagic)]) != blobMagic || b[len(blobMagic)] != blobFormat {
		return blob{}, errBlobMalformed
	}
	i := len(blobMagic) + 1
	keyID, i, ok := readLenPrefixed(b, i)
	if !ok {
		return blob{}, errBlobMalformed
	}
	versionID, i, ok := readLenPrefixed(b, i)
	if !ok {
		return blob{}, errBlobMalformed
	}
	if len(b)-i < nonceSize+tagSize {
		return blob{}, errBlobMalformed
	}
	return blob{
		keyID:     keyID,
		versionID: versionID,
		header:    b[:i],
		nonce:     b[i : i+nonceSize],
		sealed:    b[i+nonceSize:],
	}, nil
}

func readLenPrefixed(b []byte, i int) (string, int, bool) {
	if i >= len(b) {
		return "", i, false
	}
	n := int(b[i])
	i++
	if n == 0 || len(b)-i < n {
		return "", i, false
	}
	return string(b[i : i+n]), i + n, true
}

// open decrypts the blob with material under the canonical context.
func (bl blob) open(material, context []byte) ([]byte, error) {
	aead, err := newGCM(material)
	if err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	pt, err := aead.Open(nil, bl.nonce, bl.sealed, aad(bl.header, context))
	if err != nil {
		return nil, errBlobAuth
	}
	return pt, nil
}

func aad(header, context []byte) []byte {
	out := make([]byte, 0, len(header)+len(context))
	return append(append(out, header...), context...)
}

func newGCM(material []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(material)
	if err != nil {
		return nil, fmt.Errorf("new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("new gcm: %w", err)
	}
	return aead, nil
}

// canonicalContext validates an EncryptionContext parameter (a JSON object of
// string values) and returns its canonical form: keys sorted, compact JSON.
// An absent context and "{}" are the same context.
func canonicalContext(raw string) ([]byte, error) {
	if raw == "" {
		return []byte("{}"), nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	var m map[string]string
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("encryption context: %w", err)
	}
	if m == nil {
		return nil, errors.New("encryption context: not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("encryption context: trailing data")
	}
	out, err := json.Marshal(m) // encoding/json sorts map keys
	if err != nil {
		return nil, fmt.Errorf("encryption context: %w", err)
	}
	return out, nil
}
