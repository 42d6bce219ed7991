package kms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/retry"
)

func TestSDKClientAgainstLocalKMS(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cred     kmsapi.Credential
		identity string
	}{
		{"access key", akCred, kmsapi.IdentityRAMUser},
		{"sts token", stsCred, kmsapi.IdentityAssumedRole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			c := e.client(t, tc.cred, nil)
			ctx := context.Background()

			md, err := c.DescribeKey(ctx, e.keyID)
			if err != nil {
				t.Fatalf("DescribeKey: %v", err)
			}
			if md.KeyID != e.keyID || !md.Enabled() || md.PrimaryKeyVersion == "" ||
				md.Arn != "acs:kms:"+testRegion+":"+testAccount+":key/"+e.keyID || md.CreationDate.IsZero() ||
				md.LastRotationDate.IsZero() || md.KeySpec != "Aliyun_AES_256" {
				t.Fatalf("DescribeKey = %+v", md)
			}
			byAlias, err := c.DescribeKey(ctx, "alias/rekey-test")
			if err != nil || byAlias.KeyID != e.keyID {
				t.Fatalf("DescribeKey(alias) = %+v, %v", byAlias, err)
			}
			recs := e.srv.Records()
			if got := recs[len(recs)-1].UserIdentity.Type; got != tc.identity {
				t.Fatalf("ActionTrail identity = %q, want %q", got, tc.identity)
			}

			plain := []byte("a 32-byte DEK, or any bytes \x00\xff")
			encCtx := map[string]string{"k8s-kms-plugin": "rekey"}
			enc, err := c.Encrypt(ctx, e.keyID, plain, encCtx)
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if enc.KeyID != e.keyID || enc.KeyVersionID != md.PrimaryKeyVersion || enc.CiphertextBlob == "" {
				t.Fatalf("Encrypt = %v", enc)
			}
			if s := fmt.Sprintf("%v %+v %#v", enc, enc, enc); strings.Contains(s, enc.CiphertextBlob) {
				t.Fatalf("EncryptResult formats its blob: %s", s)
			}

			// Rotate: new encryptions use the new version, old blobs still decrypt.
			v2 := e.createKeyVersion(t)
			md2, err := c.DescribeKey(ctx, e.keyID)
			if err != nil || md2.PrimaryKeyVersion != v2 {
				t.Fatalf("DescribeKey after rotation = %+v, %v; want primary %s", md2, err, v2)
			}
			enc2, err := c.Encrypt(ctx, e.keyID, plain, nil)
			if err != nil || enc2.KeyVersionID != v2 {
				t.Fatalf("Encrypt after rotation = %v, %v; want version %s", enc2, err, v2)
			}
			for _, tc := range []struct {
				blob, version string
				ctx           map[string]string
			}{{enc.CiphertextBlob, md.PrimaryKeyVersion, encCtx}, {enc2.CiphertextBlob, v2, nil}} {
				dec, err := c.Decrypt(ctx, tc.blob, tc.ctx)
				if err != nil {
					t.Fatalf("Decrypt: %v", err)
				}
				if !bytes.Equal(dec.Plaintext, plain) || dec.KeyID != e.keyID || dec.KeyVersionID != tc.version {
					t.Fatalf("Decrypt = %v (plaintext ok: %v), want version %s", dec, bytes.Equal(dec.Plaintext, plain), tc.version)
				}
				if s := fmt.Sprintf("%v %+v %#v", dec, dec, dec); strings.Contains(s, string(plain)) {
					t.Fatalf("DecryptResult formats its plaintext: %s", s)
				}
			}
			if _, err := c.Decrypt(ctx, enc.CiphertextBlob, map[string]string{"k8s-kms-plugin": "other"}); err == nil {
				t.Fatal("Decrypt with the wrong encryption context succeeded")
			}

			dk, err := c.GenerateDataKey(ctx, e.keyID)
			if err != nil {
				t.Fatalf("GenerateDataKey: %v", err)
			}
			if len(dk.Plaintext) != 32 || dk.KeyVersionID != v2 || dk.CiphertextBlob == "" {
				t.Fatalf("GenerateDataKey = %v", dk)
			}
			dec, err := c.Decrypt(ctx, dk.CiphertextBlob, nil)
			if err != nil || !bytes.Equal(dec.Plaintext, dk.Plaintext) {
				t.Fatalf("Decrypt(data key blob) = %v, %v; want the data key", dec, err)
			}

			versions, err := c.ListKeyVersions(ctx, e.keyID)
			if err != nil {
				t.Fatalf("ListKeyVersions: %v", err)
			}
			if len(versions) != 2 || versions[0].KeyVersionID != md.PrimaryKeyVersion || versions[1].KeyVersionID != v2 ||
				versions[1].KeyID != e.keyID || versions[1].CreationDate.IsZero() {
				t.Fatalf("ListKeyVersions = %+v", versions)
			}
		})
	}
}

func TestListKeyVersionsReadsAllPages(t *testing.T) {
	e := newEnv(t, nil)
	want := map[string]bool{}
	for range 104 { // 105 versions: two pages of 100
		want[e.createKeyVersion(t)] = true
	}
	c := e.client(t, akCred, nil)
	before := e.srv.Calls("ListKeyVersions")
	versions, err := c.ListKeyVersions(context.Background(), e.keyID)
	if err != nil {
		t.Fatalf("ListKeyVersions: %v", err)
	}
	if len(versions) != 105 {
		t.Fatalf("ListKeyVersions returned %d versions, want 105", len(versions))
	}
	seen := map[string]bool{}
	for _, v := range versions {
		if seen[v.KeyVersionID] {
			t.Fatalf("version %s listed twice", v.KeyVersionID)
		}
		seen[v.KeyVersionID] = true
		delete(want, v.KeyVersionID)
	}
	if len(want) != 0 {
		t.Fatalf("versions missing from the list: %v", want)
	}
	if pages := e.srv.Calls("ListKeyVersions") - before; pages != 2 {
		t.Fatalf("ListKeyVersions made %d calls, want 2 pages", pages)
	}
}

// faults answers the first n requests for action with status and an Alibaba-shaped error body,
// then lets requests through.
type faults struct {
	action string
	status int
	code   string
	left   atomic.Int32
	seen   atomic.Int32
}

func (f *faults) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("Action") == f.action {
			f.seen.Add(1)
			if f.left.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(f.status)
				fmt.Fprintf(w, `{"Code":%q,"Message":"injected fault","RequestId":"fault-%d","HostId":"kms"}`, f.code, f.seen.Load())
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func TestTransientFaultsAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		action string
		status int
		code   string
		fail   int32
	}{
		{"503 on DescribeKey", "DescribeKey", http.StatusServiceUnavailable, "ServiceUnavailable", 3},
		{"500 on Encrypt", "Encrypt", http.StatusInternalServerError, "InternalFailure", 1},
		{"429 throttling on Decrypt", "Decrypt", http.StatusTooManyRequests, kms.CodeThrottling, 2},
		{"gateway throttling with 400", "GenerateDataKey", http.StatusBadRequest, "Throttling.User", 1},
		{"503 on ListKeyVersions", "ListKeyVersions", http.StatusServiceUnavailable, "ServiceUnavailable", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &faults{action: tc.action, status: tc.status, code: tc.code}
			f.left.Store(tc.fail)
			e := newEnv(t, f.wrap)
			var retries atomic.Int32
			c := e.client(t, akCred, func(cfg *kms.Config) {
				cfg.Retry.MaxAttempts = 5
				cfg.OnRetry = func(op string, err error, _ time.Duration) {
					if op != tc.action || !strings.Contains(err.Error(), tc.code) {
						t.Errorf("OnRetry(%s, %v), want %s and code %s", op, err, tc.action, tc.code)
					}
					retries.Add(1)
				}
			})
			ctx := context.Background()
			blob := ""
			if tc.action == "Decrypt" {
				enc, err := c.Encrypt(ctx, e.keyID, []byte("x"), nil)
				if err != nil {
					t.Fatalf("Encrypt: %v", err)
				}
				blob = enc.CiphertextBlob
			}
			var err error
			switch tc.action {
			case "DescribeKey":
				_, err = c.DescribeKey(ctx, e.keyID)
			case "Encrypt":
				_, err = c.Encrypt(ctx, e.keyID, []byte("x"), nil)
			case "Decrypt":
				_, err = c.Decrypt(ctx, blob, nil)
			case "GenerateDataKey":
				_, err = c.GenerateDataKey(ctx, e.keyID)
			case "ListKeyVersions":
				_, err = c.ListKeyVersions(ctx, e.keyID)
			}
			if err != nil {
				t.Fatalf("%s after %d faults: %v", tc.action, tc.fail, err)
			}
			if got := f.seen.Load(); got != tc.fail+1 {
				t.Fatalf("%s sent %d times, want %d", tc.action, got, tc.fail+1)
			}
			if got := retries.Load(); got != tc.fail {
				t.Fatalf("OnRetry called %d times, want %d", got, tc.fail)
			}
		})
	}
}

func TestRetriesAreBounded(t *testing.T) {
	f := &faults{action: "DescribeKey", status: http.StatusServiceUnavailable, code: "ServiceUnavailable"}
	f.left.Store(1 << 30)
	e := newEnv(t, f.wrap)
	c := e.client(t, akCred, func(cfg *kms.Config) { cfg.Retry.MaxAttempts = 3 })
	_, err := c.DescribeKey(context.Background(), e.keyID)
	var ex *retry.ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 3 || f.seen.Load() != 3 {
		t.Fatalf("err = %v (attempts sent %d), want ExhaustedError after 3", err, f.seen.Load())
	}
	if retry.Classify(err) != retry.Retriable {
		t.Fatalf("Classify(exhausted) = %v, want retriable", retry.Classify(err))
	}
	assertClean(t, "error", err.Error(), append(secrets(akCred), e.keyID)...)
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, akCred, nil)
	ctx := context.Background()
	unknown := "0d4a7c3e-9b1f-4e2a-8c5d-6f7e8a9b0c1d"

	before := e.srv.Calls("DescribeKey")
	_, err := c.DescribeKey(ctx, unknown)
	if err == nil {
		t.Fatal("DescribeKey of an unknown key succeeded")
	}
	if n := e.srv.Calls("DescribeKey") - before; n != 1 {
		t.Fatalf("DescribeKey sent %d times, want 1 (not retried)", n)
	}
	if !kms.IsKeyNotFound(err) || kms.ErrorCode(err) != kms.CodeKeyNotFound || retry.Classify(err) != retry.NotFound {
		t.Fatalf("err = %v: IsKeyNotFound %v, code %q, class %v", err, kms.IsKeyNotFound(err), kms.ErrorCode(err), retry.Classify(err))
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "kms describe key "+kms.Redact(unknown)+": Forbidden.KeyNotFound (http 404)") ||
		!strings.Contains(msg, "[request ") {
		t.Fatalf("error message %q lacks the operation, redacted key, code or request ID", msg)
	}
	assertClean(t, "error", msg, append(secrets(akCred), unknown)...)
	var ae *kms.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.RequestID == "" {
		t.Fatalf("errors.As(APIError) = %+v", ae)
	}

	_, err = c.DescribeKey(ctx, "alias/nope")
	if !kms.IsKeyNotFound(err) {
		t.Fatalf("unknown alias: %v, want key not found", err)
	}

	e.disableKey(t)
	before = e.srv.Calls("Encrypt")
	_, err = c.Encrypt(ctx, e.keyID, []byte("dek"), nil)
	if !kms.IsKeyDisabled(err) || e.srv.Calls("Encrypt")-before != 1 {
		t.Fatalf("Encrypt with a disabled key: %v (sent %d times), want one Rejected.Disabled", err, e.srv.Calls("Encrypt")-before)
	}
	assertClean(t, "error", err.Error(), append(secrets(akCred), e.keyID)...)
}

func TestErrorsNeverCarrySecrets(t *testing.T) {
	e := newEnv(t, nil)
	plain := []byte("plaintext-that-must-not-leak")
	encoded := base64.StdEncoding.EncodeToString(plain)
	forbidden := append(secrets(stsCred), encoded, e.keyID)

	t.Run("signature mismatch echoes the string to sign", func(t *testing.T) {
		c := e.client(t, stsCred, func(cfg *kms.Config) {
			cfg.Credentials = kms.Credentials{AccessKeyID: stsCred.AccessKeyID, AccessKeySecret: "wrong-secret", SecurityToken: stsCred.SecurityToken}
		})
		_, err := c.Encrypt(context.Background(), e.keyID, plain, nil)
		if kms.ErrorCode(err) != kmsapi.CodeSignatureDoesNotMatch {
			t.Fatalf("err = %v, want SignatureDoesNotMatch", err)
		}
		assertClean(t, "error", err.Error(), append(forbidden, "wrong-secret")...)
	})
	t.Run("transport error carries the request URL", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		c := e.client(t, stsCred, func(cfg *kms.Config) { cfg.Endpoint = dead })
		_, err = c.Encrypt(context.Background(), e.keyID, plain, nil)
		if err == nil || retry.Classify(err) != retry.Retriable {
			t.Fatalf("err = %v (class %v), want a retriable transport error", err, retry.Classify(err))
		}
		var ex *retry.ExhaustedError
		if !errors.As(err, &ex) || !strings.Contains(err.Error(), "http://"+dead) {
			t.Fatalf("err = %v, want an exhausted retry naming the host", err)
		}
		assertClean(t, "error", err.Error(), forbidden...)
	})
}

func TestCallTimeoutCancelsTheRequest(t *testing.T) {
	var stalls atomic.Int32
	stalls.Store(1)
	stall := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("Action") == "DescribeKey" && stalls.Add(-1) >= 0 {
				select { // hang until the client gives up
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	e := newEnv(t, stall)
	c := e.client(t, akCred, func(cfg *kms.Config) { cfg.CallTimeout = 300 * time.Millisecond })
	start := time.Now()
	md, err := c.DescribeKey(context.Background(), e.keyID)
	if err != nil || md.KeyID != e.keyID {
		t.Fatalf("DescribeKey after one stalled attempt: %+v, %v", md, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("DescribeKey took %v: the per-call timeout did not cut the stalled attempt", d)
	}

	// The caller's context bounds everything, retries included.
	stalls.Store(100)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c2 := e.client(t, akCred, func(cfg *kms.Config) { cfg.CallTimeout = 10 * time.Second })
	start = time.Now()
	_, err = c2.DescribeKey(ctx, e.keyID)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("DescribeKey ignored the caller's deadline for %v", d)
	}
}

func TestDefaultSchemeIsHTTPS(t *testing.T) {
	srv, err := kmsapi.NewServer(kmsapi.Options{Region: testRegion, AccountID: testAccount, Credentials: []kmsapi.Credential{akCred}})
	if err != nil {
		t.Fatal(err)
	}
	keyID, _, err := srv.EnsureKey("alias/tls")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the plain-HTTP attempt below is expected
	ts.StartTLS()
	defer ts.Close()
	cfg := kms.Config{
		Region:      testRegion,
		Endpoint:    strings.TrimPrefix(ts.URL, "https://"),
		Credentials: kms.Credentials{AccessKeyID: akCred.AccessKeyID, AccessKeySecret: akCred.AccessKeySecret},
		Transport:   ts.Client().Transport, // trusts the test certificate
		Retry:       retry.Policy{MaxAttempts: 1},
	}
	c, err := kms.NewSDKClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Scheme() != kms.SchemeHTTPS {
		t.Fatalf("Scheme() = %q, want HTTPS", c.Scheme())
	}
	if md, err := c.DescribeKey(context.Background(), keyID); err != nil || md.KeyID != keyID {
		t.Fatalf("DescribeKey over TLS = %+v, %v", md, err)
	}

	cfg.Scheme = kms.SchemeHTTP
	plain, err := kms.NewSDKClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.DescribeKey(context.Background(), keyID); err == nil {
		t.Fatal("plain HTTP to a TLS server succeeded: the scheme is not applied")
	}
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, stsCred, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 4 {
				plain := []byte(fmt.Sprintf("dek-%d-%d", i, j))
				enc, err := c.Encrypt(ctx, e.keyID, plain, nil)
				if err != nil {
					errs <- err
					return
				}
				dec, err := c.Decrypt(ctx, enc.CiphertextBlob, nil)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(dec.Plaintext, plain) {
					errs <- fmt.Errorf("round trip %d-%d returned other bytes", i, j)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEmptyArguments(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client(t, akCred, nil)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"DescribeKey":     func() error { _, err := c.DescribeKey(ctx, ""); return err },
		"ListKeyVersions": func() error { _, err := c.ListKeyVersions(ctx, ""); return err },
		"Encrypt key":     func() error { _, err := c.Encrypt(ctx, "", []byte("x"), nil); return err },
		"Encrypt data":    func() error { _, err := c.Encrypt(ctx, e.keyID, nil, nil); return err },
		"Decrypt":         func() error { _, err := c.Decrypt(ctx, "", nil); return err },
		"GenerateDataKey": func() error { _, err := c.GenerateDataKey(ctx, ""); return err },
	} {
		if err := call(); err == nil {
			t.Errorf("%s with an empty argument succeeded", name)
		}
	}
	if n := len(e.srv.CallCounts()); n != 0 {
		t.Fatalf("empty arguments reached the server: %v", e.srv.CallCounts())
	}
}
