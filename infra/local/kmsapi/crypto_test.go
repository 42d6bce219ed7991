package kmsapi_test

import (
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

func TestSDKEncryptDecryptAcrossVersions(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	md := createKey(t, c, nil)
	const ctx = `{"namespace":"prod","name":"db-password"}`
	plaintext := base64.StdEncoding.EncodeToString([]byte("hunter2 is not a password"))

	old, err := encrypt(c, md.KeyId, plaintext, ctx)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if old.KeyId != md.KeyId || old.KeyVersionId != md.PrimaryKeyVersion || old.CiphertextBlob == "" || old.RequestId == "" {
		t.Fatalf("Encrypt = %+v", old)
	}

	v2 := createKeyVersion(t, c, md.KeyId)
	_, err = encrypt(c, "alias/none", plaintext, ctx)
	wantServerError(t, err, kmsapi.CodeAliasNotFound, http.StatusNotFound)
	fresh, err := encrypt(c, md.Arn, plaintext, ctx)
	if err != nil {
		t.Fatalf("Encrypt after rotation: %v", err)
	}
	if fresh.KeyVersionId != v2.KeyVersionId {
		t.Fatalf("Encrypt after rotation used version %s, want the new primary %s", fresh.KeyVersionId, v2.KeyVersionId)
	}

	for _, tc := range []struct {
		name        string
		blob        string
		wantVersion string
	}{
		{"blob of the old version", old.CiphertextBlob, md.PrimaryKeyVersion},
		{"blob of the new version", fresh.CiphertextBlob, v2.KeyVersionId},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Key order in the context does not matter: it is canonicalised.
			got, err := decrypt(c, tc.blob, `{"name":"db-password","namespace":"prod"}`)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if got.Plaintext != plaintext || got.KeyId != md.KeyId || got.KeyVersionId != tc.wantVersion {
				t.Fatalf("Decrypt = %+v, want plaintext %q version %s", got, plaintext, tc.wantVersion)
			}
		})
	}

	blob, _ := base64.StdEncoding.DecodeString(old.CiphertextBlob)
	flipped := func(i int) string {
		b := append([]byte(nil), blob...)
		b[i] ^= 0x01
		return base64.StdEncoding.EncodeToString(b)
	}
	for _, tc := range []struct {
		name, blob, ctx, code string
		status                int
	}{
		{"no context", old.CiphertextBlob, "", kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"other context value", old.CiphertextBlob, `{"namespace":"prod","name":"other"}`, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"extra context entry", old.CiphertextBlob, `{"namespace":"prod","name":"db-password","x":"y"}`, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"context not an object", old.CiphertextBlob, `["namespace"]`, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"context with a number", old.CiphertextBlob, `{"n":1}`, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"tampered tag", flipped(len(blob) - 1), ctx, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"tampered ciphertext", flipped(len(blob) - 20), ctx, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"tampered magic", flipped(0), ctx, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"truncated", base64.StdEncoding.EncodeToString(blob[:20]), ctx, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
		{"not base64", "!!not-base64!!", ctx, kmsapi.CodeInvalidParameter, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decrypt(c, tc.blob, tc.ctx)
			wantServerError(t, err, tc.code, tc.status)
		})
	}
}

func TestSDKEncryptOpaquePlaintext(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, rootCred)
	md := createKey(t, c, nil)
	// KMS treats the Plaintext parameter as an opaque string: Decrypt gives it back verbatim.
	for _, pt := range []string{"plain text, not base64 & friends = ~*", "aGVsbG8=", "ünïcødé ✓"} {
		enc, err := encrypt(c, md.KeyId, pt, "")
		if err != nil {
			t.Fatalf("Encrypt(%q): %v", pt, err)
		}
		dec, err := decrypt(c, enc.CiphertextBlob, "{}")
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		if dec.Plaintext != pt {
			t.Fatalf("round trip of %q gave %q", pt, dec.Plaintext)
		}
	}
	big := make([]byte, 6*1024+1)
	for i := range big {
		big[i] = 'a'
	}
	_, err := encrypt(c, md.KeyId, string(big), "")
	wantServerError(t, err, kmsapi.CodeInvalidParameter, http.StatusBadRequest)
}

func TestSDKGenerateDataKey(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, stsCred)
	md := createKey(t, c, nil)
	const ctx = `{"secret":"ns/name"}`

	for _, tc := range []struct {
		name, spec, bytes string
		wantLen           int
		code              string
	}{
		{name: "default", wantLen: 32},
		{name: "AES_256", spec: "AES_256", wantLen: 32},
		{name: "AES_128", spec: "AES_128", wantLen: 16},
		{name: "NumberOfBytes", bytes: "48", wantLen: 48},
		{name: "NumberOfBytes wins over KeySpec", spec: "AES_128", bytes: "64", wantLen: 64},
		{name: "bad spec", spec: "AES_512", code: kmsapi.CodeInvalidParameter},
		{name: "zero bytes", bytes: "0", code: kmsapi.CodeInvalidParameter},
		{name: "too many bytes", bytes: "1025", code: kmsapi.CodeInvalidParameter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := kms.CreateGenerateDataKeyRequest()
			req.KeyId, req.KeySpec, req.NumberOfBytes, req.EncryptionContext = md.KeyId, tc.spec, requests.Integer(tc.bytes), ctx
			resp, err := c.GenerateDataKey(req)
			if tc.code != "" {
				wantServerError(t, err, tc.code, http.StatusBadRequest)
				return
			}
			if err != nil {
				t.Fatalf("GenerateDataKey: %v", err)
			}
			raw, err := base64.StdEncoding.DecodeString(resp.Plaintext)
			if err != nil || len(raw) != tc.wantLen {
				t.Fatalf("data key %q decodes to %d bytes (%v), want %d", resp.Plaintext, len(raw), err, tc.wantLen)
			}
			if resp.KeyId != md.KeyId || resp.KeyVersionId != md.PrimaryKeyVersion {
				t.Fatalf("GenerateDataKey = %+v", resp)
			}
			dec, err := decrypt(c, resp.CiphertextBlob, ctx)
			if err != nil {
				t.Fatalf("Decrypt data key: %v", err)
			}
			if dec.Plaintext != resp.Plaintext || dec.KeyVersionId != resp.KeyVersionId {
				t.Fatalf("Decrypt of the data key blob = %+v, want plaintext %q", dec, resp.Plaintext)
			}
		})
	}
}
