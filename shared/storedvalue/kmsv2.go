package storedvalue

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// EncryptedObject field numbers (k8s.io/apiserver pkg/storage/value/encrypt/envelope/kmsv2/v2/api.proto).
const (
	fieldEncryptedData          protowire.Number = 1
	fieldKeyID                  protowire.Number = 2
	fieldEncryptedDEKSource     protowire.Number = 3
	fieldAnnotations            protowire.Number = 4
	fieldEncryptedDEKSourceType protowire.Number = 5

	mapEntryKey   protowire.Number = 1
	mapEntryValue protowire.Number = 2
)

// Limits of kmsv2.ValidateEncryptedObject (k8s.io/apiserver v0.37.2 envelope.go).
const (
	keyIDMaxSize              = 1024      // KeyIDMaxSize
	encryptedDEKSourceMaxSize = 1024      // encryptedDEKSourceMaxSize
	annotationsMaxSize        = 32 * 1024 // annotationsMaxSize: keys plus values
	dns1123SubdomainMaxLength = 253
	dns1123LabelMaxLength     = 63
)

// EncryptedDEKSourceType enum values.
const (
	dekSourceAESGCMKey  int32 = 0
	dekSourceHKDFSHA256 int32 = 1
)

// encryptedObject is what rekey needs of a KMS v2 EncryptedObject: sizes instead of the
// ciphertexts, and annotation keys with the sizes of their values.
type encryptedObject struct {
	encryptedDataLen      int
	keyID                 string
	encryptedDEKSourceLen int
	annotations           map[string]int // key -> len(value)
	dekSourceType         int32
}

// decodeEncryptedObject decodes b the way proto.Unmarshal decodes into the generated
// EncryptedObject (google.golang.org/protobuf v1.36): the last occurrence of a scalar field wins,
// map entries merge (a repeated key keeps its last value), a known field with an unexpected wire
// type is skipped like an unknown field, string fields must be UTF-8, and an enum varint is
// truncated to int32.
func decodeEncryptedObject(b []byte) (encryptedObject, error) {
	var o encryptedObject
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return o, fmt.Errorf("field tag: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return o, fmt.Errorf("field tag: field number %d is out of range", num)
		}
		if typ == protowire.EndGroupType {
			return o, fmt.Errorf("field %d: unexpected end-group marker", num)
		}
		b = b[n:]
		n = -1
		switch {
		case num == fieldEncryptedData && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				o.encryptedDataLen = len(v)
			}
		case num == fieldKeyID && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				if !utf8.Valid(v) {
					return o, fmt.Errorf("field %d (keyID): string is not valid UTF-8", num)
				}
				o.keyID = string(v)
			}
		case num == fieldEncryptedDEKSource && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				o.encryptedDEKSourceLen = len(v)
			}
		case num == fieldAnnotations && typ == protowire.BytesType:
			var entry []byte
			if entry, n = protowire.ConsumeBytes(b); n >= 0 {
				k, vlen, err := decodeAnnotation(entry)
				if err != nil {
					return o, fmt.Errorf("field %d (annotations): %w", num, err)
				}
				if o.annotations == nil {
					o.annotations = make(map[string]int)
				}
				o.annotations[k] = vlen
			}
		case num == fieldEncryptedDEKSourceType && typ == protowire.VarintType:
			var v uint64
			if v, n = protowire.ConsumeVarint(b); n >= 0 {
				o.dekSourceType = int32(v) // proto enums are int32; protobuf-go truncates likewise
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return o, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return o, nil
}

// decodeAnnotation decodes one map<string, bytes> entry and returns its key and the size of its
// value. A missing key or value is the empty string or bytes, as in protobuf-go.
func decodeAnnotation(b []byte) (string, int, error) {
	var key string
	var vlen int
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", 0, fmt.Errorf("map entry tag: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return "", 0, fmt.Errorf("map entry tag: field number %d is out of range", num)
		}
		b = b[n:]
		n = -1
		switch {
		case num == mapEntryKey && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				if !utf8.Valid(v) {
					return "", 0, errors.New("map key is not valid UTF-8")
				}
				key = string(v)
			}
		case num == mapEntryValue && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				vlen = len(v)
			}
		default:
			// Also rejects an end-group marker, as ConsumeFieldValue does.
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return "", 0, fmt.Errorf("map entry field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return key, vlen, nil
}

// validate applies kmsv2.ValidateEncryptedObject's rules, in its order. Its errors say which rule
// failed and give sizes, never the key ID or an annotation key.
func (o encryptedObject) validate() error {
	switch o.dekSourceType {
	case dekSourceAESGCMKey, dekSourceHKDFSHA256:
	default:
		return fmt.Errorf("unknown encryptedDEKSourceType %d", o.dekSourceType)
	}
	if o.encryptedDataLen == 0 {
		return errors.New("encrypted data is empty")
	}
	if o.encryptedDEKSourceLen == 0 {
		return errors.New("encrypted DEK source is empty")
	}
	if o.encryptedDEKSourceLen > encryptedDEKSourceMaxSize {
		return fmt.Errorf("encrypted DEK source is %d bytes, which exceeds the max size of %d", o.encryptedDEKSourceLen, encryptedDEKSourceMaxSize)
	}
	if len(o.keyID) == 0 {
		return errors.New("keyID is empty")
	}
	if len(o.keyID) > keyIDMaxSize {
		return fmt.Errorf("keyID is %d bytes, which exceeds the max size of %d", len(o.keyID), keyIDMaxSize)
	}
	var total uint64
	bad := 0
	for k, vlen := range o.annotations {
		if !isFullyQualifiedDomainName(k) {
			bad++
		}
		total += uint64(len(k)) + uint64(vlen)
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d annotation keys are not fully qualified domain names", bad, len(o.annotations))
	}
	if total > annotationsMaxSize {
		return fmt.Errorf("total size of annotations is %d, which exceeds the max size of %d", total, annotationsMaxSize)
	}
	return nil
}

func (o encryptedObject) dekSourceTypeName() string {
	if o.dekSourceType == dekSourceHKDFSHA256 {
		return DEKSourceHKDFSHA256
	}
	return DEKSourceAESGCMKey
}

func (o encryptedObject) annotationKeys() []string {
	if len(o.annotations) == 0 {
		return nil
	}
	keys := make([]string, 0, len(o.annotations))
	for k := range o.annotations {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// isFullyQualifiedDomainName mirrors k8s.io/apimachinery validation.IsFullyQualifiedDomainName:
// one trailing dot is dropped; the rest must be an RFC 1123 subdomain of at most 253 bytes with at
// least two labels of at most 63 bytes each.
func isFullyQualifiedDomainName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > dns1123SubdomainMaxLength {
		return false
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if !isDNS1123Label(l) {
			return false
		}
	}
	return true
}

// isDNS1123Label reports whether l matches [a-z0-9]([-a-z0-9]*[a-z0-9])? and is at most 63 bytes.
func isDNS1123Label(l string) bool {
	if l == "" || len(l) > dns1123LabelMaxLength {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i != 0 && i != len(l)-1:
		default:
			return false
		}
	}
	return true
}
