package storedvalue

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// secretMarker fills every ciphertext, DEK and annotation value built here, so a test can check
// that no error or class quotes value bytes.
const secretMarker = "SECRETBYTES"

// testKeyID is the key ID of the hand-built KMS v2 values; errors must not quote it.
const testKeyID = "KEYIDSECRET-0123456789"

func filler(n int) []byte {
	return bytes.Repeat([]byte(secretMarker), n/len(secretMarker)+1)[:n]
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func be16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

// pb builds protobuf wire bytes field by field.
type pb []byte

func (b pb) bytes(num protowire.Number, v []byte) pb {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func (b pb) str(num protowire.Number, v string) pb { return b.bytes(num, []byte(v)) }

func (b pb) varint(num protowire.Number, v uint64) pb {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func (b pb) raw(v ...byte) pb { return append(b, v...) }

func (b pb) annotation(k string, v []byte) pb {
	return b.bytes(fieldAnnotations, pb(nil).str(mapEntryKey, k).bytes(mapEntryValue, v))
}

// eo is a KMS v2 EncryptedObject in the order the API server's proto.Marshal writes it.
type eo struct {
	data, dek []byte
	keyID     string
	ann       map[string][]byte
	typ       uint64
}

func validEO() eo {
	return eo{data: filler(40), dek: filler(32), keyID: testKeyID}
}

func (e eo) wire() pb {
	var b pb
	if len(e.data) > 0 {
		b = b.bytes(fieldEncryptedData, e.data)
	}
	if e.keyID != "" {
		b = b.str(fieldKeyID, e.keyID)
	}
	if len(e.dek) > 0 {
		b = b.bytes(fieldEncryptedDEKSource, e.dek)
	}
	keys := make([]string, 0, len(e.ann))
	for k := range e.ann {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = b.annotation(k, e.ann[k])
	}
	if e.typ != 0 {
		b = b.varint(fieldEncryptedDEKSourceType, e.typ)
	}
	return b
}

func kmsv2(name string, body []byte) []byte { return cat([]byte("k8s:enc:kms:v2:"+name+":"), body) }

type classifyCase struct {
	name    string
	raw     []byte
	want    Value
	wantErr error  // ErrUnrecognised or ErrMalformed; nil for success
	errHas  string // a fragment the error must hold
}

func classifyCases() []classifyCase {
	e := validEO()
	bigAnn := map[string][]byte{"a.example.com": filler(annotationsMaxSize - len("a.example.com"))}
	tooBigAnn := map[string][]byte{"a.example.com": filler(annotationsMaxSize - len("a.example.com") + 1)}
	valid := e.wire()
	return []classifyCase{
		// Identity.
		{name: "identity protobuf", raw: []byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret"), want: Value{Provider: Identity}},
		{name: "identity json", raw: []byte(`{"kind":"Secret","apiVersion":"v1"}`), want: Value{Provider: Identity}},
		{name: "identity bare magic", raw: []byte("k8s\x00"), want: Value{Provider: Identity}},
		{name: "empty", raw: nil, wantErr: ErrUnrecognised, errHas: "empty value"},
		{name: "plain text", raw: []byte(secretMarker), wantErr: ErrUnrecognised, errHas: "no identity or encryption prefix"},
		{name: "json after whitespace", raw: []byte(` {"kind":"Secret"}`), wantErr: ErrUnrecognised},
		{name: "k8s without magic byte", raw: []byte("k8s\x01" + secretMarker), wantErr: ErrUnrecognised},
		{name: "unknown provider", raw: []byte("k8s:enc:rot13:v1:key:" + secretMarker), wantErr: ErrUnrecognised, errHas: `"k8s:enc:rot13:v1:"`},
		{name: "unknown kms version", raw: []byte("k8s:enc:kms:v3:p:" + secretMarker), wantErr: ErrUnrecognised, errHas: `"k8s:enc:kms:v3:"`},
		{name: "unknown prefix with junk", raw: []byte("k8s:enc:" + secretMarker + ":x"), wantErr: ErrUnrecognised, errHas: `"k8s:enc:"`},
		{name: "encryption prefix cut short", raw: []byte("k8s:enc:aescbc:v1"), wantErr: ErrUnrecognised},

		// AES-CBC.
		{name: "aescbc", raw: cat([]byte("k8s:enc:aescbc:v1:key2:"), filler(32)), want: Value{Provider: AESCBC, KeyName: "key2"}},
		{name: "aescbc three blocks", raw: cat([]byte("k8s:enc:aescbc:v1:key2:"), filler(48)), want: Value{Provider: AESCBC, KeyName: "key2"}},
		{name: "aescbc ciphertext with colons", raw: cat([]byte("k8s:enc:aescbc:v1:k:"), bytes.Repeat([]byte(":"), 32)), want: Value{Provider: AESCBC, KeyName: "k"}},
		{name: "aescbc iv only", raw: cat([]byte("k8s:enc:aescbc:v1:key2:"), filler(16)), wantErr: ErrMalformed, errHas: `aescbc key "key2": ciphertext is 16 bytes`},
		{name: "aescbc partial block", raw: cat([]byte("k8s:enc:aescbc:v1:key2:"), filler(47)), wantErr: ErrMalformed},
		{name: "aescbc empty", raw: []byte("k8s:enc:aescbc:v1:key2:"), wantErr: ErrMalformed},
		{name: "aescbc no name terminator", raw: []byte("k8s:enc:aescbc:v1:" + secretMarker), wantErr: ErrMalformed, errHas: "no ':' ends the key name"},
		{name: "aescbc empty name", raw: cat([]byte("k8s:enc:aescbc:v1::"), filler(32)), wantErr: ErrMalformed, errHas: "empty key name"},
		{name: "aescbc control byte in name", raw: cat([]byte("k8s:enc:aescbc:v1:k\x01y:"), filler(32)), wantErr: ErrMalformed, errHas: "not printable"},
		{name: "aescbc invalid utf8 name", raw: cat([]byte("k8s:enc:aescbc:v1:k\xffy:"), filler(32)), wantErr: ErrMalformed, errHas: "not printable"},
		{name: "aescbc unicode name", raw: cat([]byte("k8s:enc:aescbc:v1:clé-2:"), filler(32)), want: Value{Provider: AESCBC, KeyName: "clé-2"}},

		// AES-GCM.
		{name: "aesgcm", raw: cat([]byte("k8s:enc:aesgcm:v1:k1:"), filler(28)), want: Value{Provider: AESGCM, KeyName: "k1"}},
		{name: "aesgcm truncated", raw: cat([]byte("k8s:enc:aesgcm:v1:k1:"), filler(27)), wantErr: ErrMalformed, errHas: `aesgcm key "k1": ciphertext is 27 bytes`},

		// Secretbox.
		{name: "secretbox", raw: cat([]byte("k8s:enc:secretbox:v1:sb:"), filler(40)), want: Value{Provider: Secretbox, KeyName: "sb"}},
		{name: "secretbox nonce only", raw: cat([]byte("k8s:enc:secretbox:v1:sb:"), filler(24)), wantErr: ErrMalformed, errHas: "24-byte nonce"},
		{name: "secretbox short nonce", raw: cat([]byte("k8s:enc:secretbox:v1:sb:"), filler(10)), wantErr: ErrMalformed},

		// KMS v1.
		{name: "kms v1", raw: cat([]byte("k8s:enc:kms:v1:legacy:"), be16(4), filler(4), filler(28)), want: Value{Provider: KMSv1, KeyName: "legacy"}},
		{name: "kms v1 one byte of data", raw: cat([]byte("k8s:enc:kms:v1:legacy:"), be16(300), filler(301)), want: Value{Provider: KMSv1, KeyName: "legacy"}},
		// A KMS v1 provider name may hold a colon; Classify splits at the first one, so the DEK
		// length is read from the rest of the name.
		{name: "kms v1 name with colon", raw: cat([]byte("k8s:enc:kms:v1:my:kms:"), be16(4), filler(4), filler(28)), wantErr: ErrMalformed, errHas: `kms-v1 provider "my"`},
		{name: "kms v1 no length", raw: []byte("k8s:enc:kms:v1:legacy:\x00"), wantErr: ErrMalformed, errHas: "want a 2-byte DEK length"},
		{name: "kms v1 zero DEK", raw: cat([]byte("k8s:enc:kms:v1:legacy:"), be16(0), filler(28)), wantErr: ErrMalformed, errHas: "encrypted DEK is empty"},
		{name: "kms v1 DEK past end", raw: cat([]byte("k8s:enc:kms:v1:legacy:"), be16(256), filler(255)), wantErr: ErrMalformed, errHas: "encrypted DEK length is 256 but only 255 bytes follow"},
		{name: "kms v1 no data", raw: cat([]byte("k8s:enc:kms:v1:legacy:"), be16(8), filler(8)), wantErr: ErrMalformed, errHas: "no encrypted data"},
		{name: "kms v1 no name terminator", raw: []byte("k8s:enc:kms:v1:legacy"), wantErr: ErrMalformed},

		// KMS v2: valid.
		{name: "kms v2", raw: kmsv2("ack", valid), want: Value{Provider: KMSv2, KeyName: "ack", KeyID: testKeyID, DEKSourceType: DEKSourceAESGCMKey}},
		{name: "kms v2 seed and annotations", raw: kmsv2("ack", eo{data: filler(64), dek: filler(32), keyID: testKeyID, typ: 1,
			ann: map[string][]byte{"z.example.com": filler(3), "kms.alibabacloud.com": filler(9), "version.encryption.remote.io.": nil}}.wire()),
			want: Value{Provider: KMSv2, KeyName: "ack", KeyID: testKeyID, DEKSourceType: DEKSourceHKDFSHA256,
				Annotations: []string{"kms.alibabacloud.com", "version.encryption.remote.io.", "z.example.com"}}},
		{name: "kms v2 fields in reverse order", raw: kmsv2("p", pb(nil).varint(5, 1).str(3, secretMarker).str(2, "k").str(1, secretMarker)),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: "k", DEKSourceType: DEKSourceHKDFSHA256}},
		{name: "kms v2 max keyID", raw: kmsv2("p", eo{data: filler(1), dek: filler(1), keyID: strings.Repeat("k", keyIDMaxSize)}.wire()),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: strings.Repeat("k", keyIDMaxSize), DEKSourceType: DEKSourceAESGCMKey}},
		{name: "kms v2 max DEK source", raw: kmsv2("p", eo{data: filler(1), dek: filler(encryptedDEKSourceMaxSize), keyID: "k"}.wire()),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: "k", DEKSourceType: DEKSourceAESGCMKey}},
		{name: "kms v2 max annotations", raw: kmsv2("p", eo{data: filler(1), dek: filler(1), keyID: "k", ann: bigAnn}.wire()),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: "k", DEKSourceType: DEKSourceAESGCMKey, Annotations: []string{"a.example.com"}}},
		{name: "kms v2 last keyID wins", raw: kmsv2("p", valid.str(fieldKeyID, "second")),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: "second", DEKSourceType: DEKSourceAESGCMKey}},
		{name: "kms v2 unknown fields skipped", raw: kmsv2("p", valid.varint(9, 7).bytes(10, filler(5)).raw(0x5d, 1, 2, 3, 4).raw(0x61, 1, 2, 3, 4, 5, 6, 7, 8).raw(0x6b, 0x08, 0x01, 0x6c)),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: testKeyID, DEKSourceType: DEKSourceAESGCMKey}},
		{name: "kms v2 enum varint truncated to int32", raw: kmsv2("p", valid.varint(fieldEncryptedDEKSourceType, 1<<32|1)),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: testKeyID, DEKSourceType: DEKSourceHKDFSHA256}},
		{name: "kms v2 enum with wrong wire type is skipped", raw: kmsv2("p", valid.bytes(fieldEncryptedDEKSourceType, []byte{1})),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: testKeyID, DEKSourceType: DEKSourceAESGCMKey}},
		{name: "kms v2 repeated annotation keeps last value", raw: kmsv2("p", valid.annotation("a.b", filler(annotationsMaxSize)).annotation("a.b", nil)),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: testKeyID, DEKSourceType: DEKSourceAESGCMKey, Annotations: []string{"a.b"}}},
		{name: "kms v2 annotation entry with unknown field", raw: kmsv2("p", valid.bytes(fieldAnnotations, pb(nil).str(1, "a.b").varint(3, 1).bytes(2, nil))),
			want: Value{Provider: KMSv2, KeyName: "p", KeyID: testKeyID, DEKSourceType: DEKSourceAESGCMKey, Annotations: []string{"a.b"}}},

		// KMS v2: corrupt envelope or prefix.
		{name: "kms v2 empty body", raw: kmsv2("p", nil), wantErr: ErrMalformed, errHas: "encrypted data is empty"},
		{name: "kms v2 empty provider", raw: kmsv2("", valid), wantErr: ErrMalformed, errHas: "empty key name"},
		{name: "kms v2 no name terminator", raw: []byte("k8s:enc:kms:v2:provider"), wantErr: ErrMalformed},
		{name: "kms v2 truncated last byte", raw: kmsv2("p", valid[:len(valid)-1]), wantErr: ErrMalformed, errHas: "field 3: unexpected EOF"},
		{name: "kms v2 truncated length", raw: kmsv2("p", pb(nil).raw(0x0a, 0x80)), wantErr: ErrMalformed, errHas: "field 1"},
		{name: "kms v2 truncated tag", raw: kmsv2("p", valid.raw(0x80)), wantErr: ErrMalformed, errHas: "field tag"},
		{name: "kms v2 varint overflow", raw: kmsv2("p", valid.raw(0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)), wantErr: ErrMalformed, errHas: "overflow"},
		{name: "kms v2 field number zero", raw: kmsv2("p", valid.raw(0x02, 0x00)), wantErr: ErrMalformed, errHas: "invalid field number"},
		{name: "kms v2 field number too big", raw: kmsv2("p", protowire.AppendVarint(valid, uint64(protowire.MaxValidNumber+1)<<3)), wantErr: ErrMalformed, errHas: "out of range"},
		{name: "kms v2 end group", raw: kmsv2("p", valid.raw(0x0c)), wantErr: ErrMalformed, errHas: "end-group"},
		{name: "kms v2 unterminated group", raw: kmsv2("p", valid.raw(0x6b, 0x08, 0x01)), wantErr: ErrMalformed},
		{name: "kms v2 mismatched group", raw: kmsv2("p", valid.raw(0x6b, 0x74)), wantErr: ErrMalformed, errHas: "end group"},
		{name: "kms v2 reserved wire type", raw: kmsv2("p", valid.raw(0x0e)), wantErr: ErrMalformed, errHas: "reserved wire type"},
		{name: "kms v2 keyID not utf8", raw: kmsv2("p", valid.bytes(fieldKeyID, []byte{0xff, 0xfe})), wantErr: ErrMalformed, errHas: "not valid UTF-8"},
		{name: "kms v2 annotation key not utf8", raw: kmsv2("p", valid.bytes(fieldAnnotations, pb(nil).bytes(1, []byte{0xc0}))), wantErr: ErrMalformed, errHas: "map key is not valid UTF-8"},
		{name: "kms v2 annotation entry truncated", raw: kmsv2("p", valid.bytes(fieldAnnotations, pb(nil).raw(0x0a, 0x05, 'a'))), wantErr: ErrMalformed, errHas: "map entry field 1"},
		{name: "kms v2 annotation entry end group", raw: kmsv2("p", valid.bytes(fieldAnnotations, pb(nil).raw(0x0c))), wantErr: ErrMalformed},

		// KMS v2: decodes but fails ValidateEncryptedObject.
		{name: "kms v2 unknown DEK source type", raw: kmsv2("p", valid.varint(fieldEncryptedDEKSourceType, 2)), wantErr: ErrMalformed, errHas: "unknown encryptedDEKSourceType 2"},
		{name: "kms v2 negative DEK source type", raw: kmsv2("p", valid.varint(fieldEncryptedDEKSourceType, 1<<64-1)), wantErr: ErrMalformed, errHas: "unknown encryptedDEKSourceType -1"},
		{name: "kms v2 no data", raw: kmsv2("p", eo{dek: filler(32), keyID: "k"}.wire()), wantErr: ErrMalformed, errHas: "encrypted data is empty"},
		{name: "kms v2 no DEK source", raw: kmsv2("p", eo{data: filler(32), keyID: "k"}.wire()), wantErr: ErrMalformed, errHas: "encrypted DEK source is empty"},
		{name: "kms v2 DEK source too big", raw: kmsv2("p", eo{data: filler(1), dek: filler(encryptedDEKSourceMaxSize + 1), keyID: "k"}.wire()), wantErr: ErrMalformed, errHas: "1025 bytes, which exceeds"},
		{name: "kms v2 no keyID", raw: kmsv2("p", eo{data: filler(1), dek: filler(1)}.wire()), wantErr: ErrMalformed, errHas: "keyID is empty"},
		{name: "kms v2 keyID too long", raw: kmsv2("p", eo{data: filler(1), dek: filler(1), keyID: testKeyID + strings.Repeat("k", keyIDMaxSize)}.wire()), wantErr: ErrMalformed, errHas: "keyID is 1046 bytes"},
		{name: "kms v2 keyID with wrong wire type", raw: kmsv2("p", eo{data: filler(1), dek: filler(1)}.wire().varint(fieldKeyID, 5)), wantErr: ErrMalformed, errHas: "keyID is empty"},
		{name: "kms v2 annotations too big", raw: kmsv2("p", eo{data: filler(1), dek: filler(1), keyID: "k", ann: tooBigAnn}.wire()), wantErr: ErrMalformed, errHas: "total size of annotations is 32769"},
		{name: "kms v2 annotation key one label", raw: kmsv2("p", eo{data: filler(1), dek: filler(1), keyID: "k", ann: map[string][]byte{"SECRETBYTES": nil}}.wire()), wantErr: ErrMalformed, errHas: "1 of 1 annotation keys"},
		{name: "kms v2 annotation key upper case", raw: kmsv2("p", valid.annotation("Kms.Example.com", nil)), wantErr: ErrMalformed},
		{name: "kms v2 annotation key empty", raw: kmsv2("p", valid.annotation("", nil)), wantErr: ErrMalformed},
		{name: "kms v2 annotation key label too long", raw: kmsv2("p", valid.annotation(strings.Repeat("a", 64)+".com", nil)), wantErr: ErrMalformed},
		{name: "kms v2 annotation key too long", raw: kmsv2("p", valid.annotation(strings.Repeat("abcdefgh.", 28)+"com", nil)), wantErr: ErrMalformed},
		{name: "kms v2 annotation key two trailing dots", raw: kmsv2("p", valid.annotation("a.b..", nil)), wantErr: ErrMalformed},
		{name: "kms v2 annotation key leading hyphen", raw: kmsv2("p", valid.annotation("-a.b", nil)), wantErr: ErrMalformed},
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range classifyCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Classify(tc.raw)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Classify() = %+v, want error wrapping %v", got, tc.wantErr)
				}
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Classify() error %q does not wrap %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("Classify() error %q does not contain %q", err, tc.errHas)
				}
				if s := err.Error(); strings.Contains(s, secretMarker) || strings.Contains(s, testKeyID) {
					t.Errorf("Classify() error %q quotes value bytes or the key ID", s)
				}
				if got.Provider != "" {
					t.Errorf("Classify() returned %+v with its error, want the zero Value", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Classify() error: %v", err)
			}
			if !equalValue(got, tc.want) {
				t.Errorf("Classify() = %+v, want %+v", got, tc.want)
			}
			if s := got.Class(); strings.Contains(s, secretMarker) {
				t.Errorf("Class() = %q quotes value bytes", s)
			}
			if s := got.RedactedClass(); strings.Contains(s, secretMarker) || strings.Contains(s, testKeyID) {
				t.Errorf("RedactedClass() = %q quotes value bytes or the key ID", s)
			}
		})
	}
}

func equalValue(a, b Value) bool {
	return a.Provider == b.Provider && a.KeyName == b.KeyName && a.KeyID == b.KeyID &&
		a.DEKSourceType == b.DEKSourceType && slices.Equal(a.Annotations, b.Annotations)
}

func TestClassifyDoesNotRetainInput(t *testing.T) {
	raw := kmsv2("p", validEO().wire().annotation("a.example.com", filler(4)))
	v, err := Classify(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		raw[i] = 'X'
	}
	want := Value{Provider: KMSv2, KeyName: "p", KeyID: testKeyID, DEKSourceType: DEKSourceAESGCMKey, Annotations: []string{"a.example.com"}}
	if !equalValue(v, want) {
		t.Errorf("Value changed when the input was overwritten: %+v", v)
	}
}

func TestClass(t *testing.T) {
	tests := []struct {
		v            Value
		want, redact string
	}{
		{Value{}, "", ""},
		{Value{Provider: Identity}, "identity", "identity"},
		{Value{Provider: AESCBC, KeyName: "key2"}, "aescbc:key2", "aescbc:key2"},
		{Value{Provider: AESGCM, KeyName: "g"}, "aesgcm:g", "aesgcm:g"},
		{Value{Provider: Secretbox, KeyName: "s"}, "secretbox:s", "secretbox:s"},
		{Value{Provider: KMSv1, KeyName: "legacy"}, "kms-v1:legacy", "kms-v1:legacy"},
		{Value{Provider: KMSv2, KeyName: "ack", KeyID: "key-1", DEKSourceType: DEKSourceHKDFSHA256, Annotations: []string{"a.b"}},
			"kms-v2:ack:key-1", "kms-v2:ack:" + HashKeyID("key-1")},
	}
	for _, tc := range tests {
		if got := tc.v.Class(); got != tc.want {
			t.Errorf("%+v.Class() = %q, want %q", tc.v, got, tc.want)
		}
		if got := tc.v.RedactedClass(); got != tc.redact {
			t.Errorf("%+v.RedactedClass() = %q, want %q", tc.v, got, tc.redact)
		}
	}
}

func TestHashKeyID(t *testing.T) {
	// echo -n key-1 | sha256sum
	tests := map[string]string{
		"":      "",
		"key-1": "sha256:be2974546978e373",
	}
	for id, want := range tests {
		if got := HashKeyID(id); got != want {
			t.Errorf("HashKeyID(%q) = %q, want %q", id, got, want)
		}
	}
	if a, b := HashKeyID("a"), HashKeyID("b"); a == b || len(a) != len("sha256:")+16 {
		t.Errorf("HashKeyID: %q and %q", a, b)
	}
}

func TestIsFullyQualifiedDomainName(t *testing.T) {
	good := []string{"a.b", "a.b.", "kms.alibabacloud.com", "x-1.y-2.z", "0.0", strings.Repeat("a", 63) + ".b"}
	bad := []string{"", ".", "a", "a.", "a..b", ".a.b", "a.b..", "A.b", "a_b.c", "-a.b", "a-.b", "a.b-", "a b.c",
		strings.Repeat("a", 64) + ".b", strings.Repeat("abcdefgh.", 28) + "com", "é.com"}
	for _, s := range good {
		if !isFullyQualifiedDomainName(s) {
			t.Errorf("isFullyQualifiedDomainName(%q) = false, want true", s)
		}
	}
	for _, s := range bad {
		if isFullyQualifiedDomainName(s) {
			t.Errorf("isFullyQualifiedDomainName(%q) = true, want false", s)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, tc := range classifyCases() {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := bytes.Clone(raw)
		v, err := Classify(raw)
		if !bytes.Equal(in, raw) {
			t.Fatal("Classify modified its input")
		}
		if err != nil {
			if v.Provider != "" {
				t.Fatalf("Classify() returned %+v with error %v", v, err)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnrecognised) {
				t.Fatalf("Classify() error %v wraps neither ErrMalformed nor ErrUnrecognised", err)
			}
			return
		}
		if v.Provider == "" {
			t.Fatal("Classify() succeeded with an empty Provider")
		}
		if v.Class() == "" {
			t.Fatal("Classify() succeeded with an empty Class")
		}
		if !slices.IsSorted(v.Annotations) {
			t.Fatalf("annotations not sorted: %q", v.Annotations)
		}
	})
}
