package storedvalue_test

// These tests hold Classify against the API server's own code (k8s.io/apiserver v0.37.2, a test-only
// dependency): the generated EncryptedObject type, kmsv2.ValidateEncryptedObject, and the real
// transformers that write values to etcd.

import (
	"bytes"
	"context"
	"crypto/aes"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	"k8s.io/apiserver/pkg/storage/value/encrypt/secretbox"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/rekey-dev/rekey/shared/storedvalue"
)

const kmsV2Prefix = "k8s:enc:kms:v2:ack-kms:"

// upstream decodes body as the API server's KMS v2 transformer does (doDecode).
func upstream(body []byte) (*kmstypes.EncryptedObject, error) {
	o := &kmstypes.EncryptedObject{}
	if err := proto.Unmarshal(body, o); err != nil {
		return nil, err
	}
	if err := kmsv2.ValidateEncryptedObject(o); err != nil {
		return nil, err
	}
	return o, nil
}

// wantFromUpstream is the Value Classify should report for a decoded EncryptedObject.
func wantFromUpstream(o *kmstypes.EncryptedObject) storedvalue.Value {
	v := storedvalue.Value{
		Provider:      storedvalue.KMSv2,
		KeyName:       "ack-kms",
		KeyID:         o.KeyID,
		DEKSourceType: o.EncryptedDEKSourceType.String(),
	}
	for k := range o.Annotations {
		v.Annotations = append(v.Annotations, k)
	}
	slices.Sort(v.Annotations)
	return v
}

func equalValue(a, b storedvalue.Value) bool {
	return a.Provider == b.Provider && a.KeyName == b.KeyName && a.KeyID == b.KeyID &&
		a.DEKSourceType == b.DEKSourceType && slices.Equal(a.Annotations, b.Annotations)
}

func generatedObjects() map[string]*kmstypes.EncryptedObject {
	return map[string]*kmstypes.EncryptedObject{
		"minimal": {EncryptedData: []byte{0}, KeyID: "k", EncryptedDEKSource: []byte{1}},
		"seed with annotations": {
			EncryptedData:          bytes.Repeat([]byte{7}, 512),
			KeyID:                  "key-id-2026-08-01",
			EncryptedDEKSource:     bytes.Repeat([]byte{9}, 256),
			EncryptedDEKSourceType: kmstypes.EncryptedDEKSourceType_HKDF_SHA256_XNONCE_AES_GCM_SEED,
			Annotations: map[string][]byte{
				"kms.alibabacloud.com":          []byte("key-version-3"),
				"version.encryption.remote.io.": nil,
				"a.b":                           {},
			},
		},
		"limits": {
			EncryptedData:      []byte{1},
			KeyID:              strings.Repeat("κ", 512), // 1024 bytes of UTF-8
			EncryptedDEKSource: bytes.Repeat([]byte{2}, 1024),
			Annotations:        map[string][]byte{"x.y": bytes.Repeat([]byte{3}, 32*1024-3)},
		},
		// Invalid ones: Classify must fail exactly where the API server does.
		"empty":                {},
		"no key id":            {EncryptedData: []byte{0}, EncryptedDEKSource: []byte{1}},
		"key id too long":      {EncryptedData: []byte{0}, KeyID: strings.Repeat("k", 1025), EncryptedDEKSource: []byte{1}},
		"no dek source":        {EncryptedData: []byte{0}, KeyID: "k"},
		"dek source too long":  {EncryptedData: []byte{0}, KeyID: "k", EncryptedDEKSource: make([]byte, 1025)},
		"no data":              {KeyID: "k", EncryptedDEKSource: []byte{1}},
		"unknown source type":  {EncryptedData: []byte{0}, KeyID: "k", EncryptedDEKSource: []byte{1}, EncryptedDEKSourceType: 7},
		"annotation not fqdn":  {EncryptedData: []byte{0}, KeyID: "k", EncryptedDEKSource: []byte{1}, Annotations: map[string][]byte{"kms": nil}},
		"annotations too big":  {EncryptedData: []byte{0}, KeyID: "k", EncryptedDEKSource: []byte{1}, Annotations: map[string][]byte{"x.y": make([]byte, 32*1024-2)}},
		"annotation key empty": {EncryptedData: []byte{0}, KeyID: "k", EncryptedDEKSource: []byte{1}, Annotations: map[string][]byte{"": {1}}},
	}
}

func TestClassifyMatchesGeneratedEncryptedObject(t *testing.T) {
	for name, o := range generatedObjects() {
		t.Run(name, func(t *testing.T) {
			for _, deterministic := range []bool{false, true} {
				body, err := proto.MarshalOptions{Deterministic: deterministic}.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				checkAgainstUpstream(t, body)
			}
		})
	}
}

// checkAgainstUpstream asserts that Classify accepts body (behind a KMS v2 prefix) exactly when the
// API server does, and then reports the same key ID, DEK source type and annotation keys.
func checkAgainstUpstream(t *testing.T, body []byte) {
	t.Helper()
	want, upErr := upstream(body)
	got, err := storedvalue.Classify(append([]byte(kmsV2Prefix), body...))
	switch {
	case upErr != nil && err == nil:
		t.Fatalf("API server rejects the value (%v) but Classify() = %+v", upErr, got)
	case upErr == nil && err != nil:
		t.Fatalf("API server accepts the value but Classify() error: %v", err)
	case err != nil:
		if !errors.Is(err, storedvalue.ErrMalformed) {
			t.Fatalf("Classify() error %v does not wrap ErrMalformed", err)
		}
	default:
		if w := wantFromUpstream(want); !equalValue(got, w) {
			t.Fatalf("Classify() = %+v, want %+v", got, w)
		}
	}
}

// FuzzEncryptedObjectMatchesUpstream feeds arbitrary EncryptedObject bytes to both decoders.
func FuzzEncryptedObjectMatchesUpstream(f *testing.F) {
	for _, o := range generatedObjects() {
		b, err := proto.Marshal(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x28, 0x81, 0x80, 0x80, 0x80, 0x10})            // enum 1<<32|1
	f.Add([]byte{0x22, 0x04, 0x0a, 0x02, 0xc3, 0x28})            // annotation key not UTF-8
	f.Add([]byte{0x6b, 0x08, 0x01, 0x6c, 0x12, 0x01, 'k'})       // group then key ID
	f.Add([]byte{0x12, 0x01, 'k', 0x10, 0x01, 0x0a, 0x01, 0x00}) // key ID then varint field 2
	f.Add([]byte{0x22, 0x03, 0x0a, 0x01, 'a', 0x22, 0x00, 0x1a}) // truncated
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAgainstUpstream(t, body)
	})
}

// fakeKMSv2 is a KMS v2 plugin that "encrypts" by reversing bytes.
type fakeKMSv2 struct {
	keyID       string
	annotations map[string][]byte
}

var _ kmsservice.Service = fakeKMSv2{}

func reversed(b []byte) []byte {
	out := bytes.Clone(b)
	slices.Reverse(out)
	return out
}

func (k fakeKMSv2) Encrypt(_ context.Context, _ string, data []byte) (*kmsservice.EncryptResponse, error) {
	return &kmsservice.EncryptResponse{Ciphertext: reversed(data), KeyID: k.keyID, Annotations: k.annotations}, nil
}

func (k fakeKMSv2) Decrypt(_ context.Context, _ string, req *kmsservice.DecryptRequest) ([]byte, error) {
	if req.KeyID != k.keyID {
		return nil, errors.New("unknown key ID")
	}
	return reversed(req.Ciphertext), nil
}

func (k fakeKMSv2) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: k.keyID}, nil
}

// fakeKMSv1 is a KMS v1 plugin that "encrypts" by reversing bytes.
type fakeKMSv1 struct{}

var _ envelope.Service = fakeKMSv1{}

func (fakeKMSv1) Encrypt(data []byte) ([]byte, error) { return reversed(data), nil }
func (fakeKMSv1) Decrypt(data []byte) ([]byte, error) { return reversed(data), nil }

// kmsV2Transformer builds the transformer an API server configured with KMS v2 provider "ack-kms"
// writes with (see encryptionconfig.kmsPrefixTransformer).
func kmsV2Transformer(t *testing.T, svc kmsservice.Service, useSeed bool) value.Transformer {
	t.Helper()
	ctx := t.Context()
	var (
		mu    sync.Mutex
		state *kmsv2.State
	)
	stateFunc := func() (kmsv2.State, error) {
		mu.Lock()
		defer mu.Unlock()
		if state == nil {
			tr, o, cacheKey, err := kmsv2.GenerateTransformer(ctx, "uid-1", svc, useSeed)
			if err != nil {
				return kmsv2.State{}, err
			}
			state = &kmsv2.State{
				Transformer:                           tr,
				EncryptedObjectKeyID:                  o.KeyID,
				EncryptedObjectEncryptedDEKSource:     o.EncryptedDEKSource,
				EncryptedObjectAnnotations:            o.Annotations,
				EncryptedObjectEncryptedDEKSourceType: o.EncryptedDEKSourceType,
				UID:                                   "uid-1",
				ExpirationTimestamp:                   time.Now().Add(time.Hour),
				CacheKey:                              cacheKey,
			}
		}
		return *state, nil
	}
	return value.NewPrefixTransformers(nil, value.PrefixTransformer{
		Prefix:      []byte(kmsV2Prefix),
		Transformer: kmsv2.NewEnvelopeTransformer(svc, "ack-kms", stateFunc, "apiserver-1"),
	})
}

// TestClassifyRealTransformers writes a Secret through each provider's real transformer, checks
// the API server reads it back, and classifies the stored bytes.
func TestClassifyRealTransformers(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := aestransformer.NewGCMTransformer(block)
	if err != nil {
		t.Fatal(err)
	}
	kmsV1 := envelope.NewEnvelopeTransformer(fakeKMSv1{}, 0, aestransformer.NewGCMTransformer)
	alibaba := fakeKMSv2{
		keyID:       "key-6f1c7e8a-2026-08-01/version-3",
		annotations: map[string][]byte{"kms.alibabacloud.com": []byte("v3"), "region.kms.alibabacloud.com": []byte("cn-hangzhou")},
	}

	tests := []struct {
		name   string
		tr     value.Transformer
		want   storedvalue.Value
		class  string
		redact string
	}{
		{
			name:  "identity is not encrypted",
			tr:    identity.NewEncryptCheckTransformer(),
			want:  storedvalue.Value{Provider: storedvalue.Identity},
			class: "identity",
		},
		{
			name:  "aescbc",
			tr:    prefixed("k8s:enc:aescbc:v1:key2:", aestransformer.NewCBCTransformer(block)),
			want:  storedvalue.Value{Provider: storedvalue.AESCBC, KeyName: "key2"},
			class: "aescbc:key2",
		},
		{
			name:  "aesgcm",
			tr:    prefixed("k8s:enc:aesgcm:v1:key1:", gcm),
			want:  storedvalue.Value{Provider: storedvalue.AESGCM, KeyName: "key1"},
			class: "aesgcm:key1",
		},
		{
			name:  "secretbox",
			tr:    prefixed("k8s:enc:secretbox:v1:sb-1:", secretbox.NewSecretboxTransformer([32]byte(key))),
			want:  storedvalue.Value{Provider: storedvalue.Secretbox, KeyName: "sb-1"},
			class: "secretbox:sb-1",
		},
		{
			name:  "kms v1",
			tr:    prefixed("k8s:enc:kms:v1:legacy-kms:", kmsV1),
			want:  storedvalue.Value{Provider: storedvalue.KMSv1, KeyName: "legacy-kms"},
			class: "kms-v1:legacy-kms",
		},
		{
			name: "kms v2 with seed and annotations",
			tr:   kmsV2Transformer(t, alibaba, true),
			want: storedvalue.Value{
				Provider: storedvalue.KMSv2, KeyName: "ack-kms", KeyID: alibaba.keyID,
				DEKSourceType: storedvalue.DEKSourceHKDFSHA256,
				Annotations:   []string{"kms.alibabacloud.com", "region.kms.alibabacloud.com"},
			},
			class:  "kms-v2:ack-kms:" + alibaba.keyID,
			redact: "kms-v2:ack-kms:" + storedvalue.HashKeyID(alibaba.keyID),
		},
		{
			name: "kms v2 with AES-GCM key",
			tr:   kmsV2Transformer(t, fakeKMSv2{keyID: "1"}, false),
			want: storedvalue.Value{
				Provider: storedvalue.KMSv2, KeyName: "ack-kms", KeyID: "1",
				DEKSourceType: storedvalue.DEKSourceAESGCMKey,
			},
			class:  "kms-v2:ack-kms:1",
			redact: "kms-v2:ack-kms:" + storedvalue.HashKeyID("1"),
		},
	}
	plaintext := []byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x10password=hunter2")
	dataCtx := value.DefaultContext("/registry/secrets/default/db-pass")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stored, err := tc.tr.TransformToStorage(t.Context(), plaintext, dataCtx)
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := tc.tr.TransformFromStorage(t.Context(), stored, dataCtx)
			if err != nil || !bytes.Equal(back, plaintext) {
				t.Fatalf("API server transformer cannot read its own value: %v", err)
			}
			got, err := storedvalue.Classify(stored)
			if err != nil {
				t.Fatalf("Classify() error: %v", err)
			}
			if !equalValue(got, tc.want) {
				t.Errorf("Classify() = %+v, want %+v", got, tc.want)
			}
			if c := got.Class(); c != tc.class {
				t.Errorf("Class() = %q, want %q", c, tc.class)
			}
			if tc.redact == "" {
				tc.redact = tc.class
			}
			if c := got.RedactedClass(); c != tc.redact {
				t.Errorf("RedactedClass() = %q, want %q", c, tc.redact)
			}

			// Every truncation of a real encrypted value is rejected or, where the envelope still
			// parses (a KMS v2 object cut before its annotations), has the same provider, key
			// name and key ID; never a panic.
			if tc.want.Provider == storedvalue.Identity {
				return
			}
			for n := range len(stored) {
				v, err := storedvalue.Classify(stored[:n])
				if err == nil && (v.Provider != tc.want.Provider || v.KeyName != tc.want.KeyName || v.KeyID != tc.want.KeyID) {
					t.Fatalf("Classify(first %d of %d bytes) = %+v, want an error or %+v", n, len(stored), v, tc.want)
				}
				if err != nil && !errors.Is(err, storedvalue.ErrMalformed) && !errors.Is(err, storedvalue.ErrUnrecognised) {
					t.Fatalf("Classify(first %d bytes) error %v wraps no sentinel", n, err)
				}
				if err != nil && strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error quotes plaintext: %v", err)
				}
			}
		})
	}
}

func prefixed(prefix string, tr value.Transformer) value.Transformer {
	return value.NewPrefixTransformers(nil, value.PrefixTransformer{Prefix: []byte(prefix), Transformer: tr})
}
