package kmsapi_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

// rewriteTransport alters every request after the SDK has signed it.
type rewriteTransport struct {
	rewrite func(q url.Values)
}

func (rt rewriteTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	q := r.URL.Query()
	rt.rewrite(q)
	r.URL.RawQuery = q.Encode()
	return http.DefaultTransport.RoundTrip(r)
}

func TestAuthRejections(t *testing.T) {
	e := newEnv(t, func(o *kmsapi.Options) {
		sts := stsCred
		sts.AccessKeyID, sts.Expiration = "STS.NTESTexpiring", time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
		o.Credentials = append(o.Credentials, sts)
	})
	keyID := createKey(t, e.client(t, rootCred), nil).KeyId

	withSecret := func(cred kmsapi.Credential, secret string) kmsapi.Credential {
		cred.AccessKeySecret = secret
		return cred
	}
	withToken := func(cred kmsapi.Credential, token string) kmsapi.Credential {
		cred.SecurityToken = token
		return cred
	}
	expiring := withToken(stsCred, stsCred.SecurityToken)
	expiring.AccessKeyID = "STS.NTESTexpiring"

	for _, tc := range []struct {
		name      string
		cred      kmsapi.Credential
		rewrite   func(url.Values)
		advance   time.Duration
		code      string
		status    int
		recommend string
	}{
		{name: "root account", cred: rootCred},
		{name: "ram user", cred: userCred},
		{name: "sts", cred: stsCred},
		{
			name: "wrong secret", cred: withSecret(rootCred, "not-the-secret"),
			code: kmsapi.CodeSignatureDoesNotMatch, status: http.StatusBadRequest,
			// The SDK compares the server's string to sign with its own: equal
			// strings mean the secret is wrong, not the canonicalisation.
			recommend: "InvalidAccessKeySecret",
		},
		{
			name: "tampered signature", cred: rootCred,
			rewrite: func(q url.Values) {
				q.Set("Signature", base64.StdEncoding.EncodeToString([]byte("twenty bytes exactly")))
			},
			code: kmsapi.CodeSignatureDoesNotMatch, status: http.StatusBadRequest, recommend: "InvalidAccessKeySecret",
		},
		{
			name: "parameter changed after signing", cred: rootCred,
			rewrite: func(q url.Values) { q.Set("KeyId", "alias/other") },
			code:    kmsapi.CodeSignatureDoesNotMatch, status: http.StatusBadRequest, recommend: "bug with the SDK",
		},
		{
			name: "garbage signature", cred: rootCred,
			rewrite: func(q url.Values) { q.Set("Signature", "%%%") },
			code:    kmsapi.CodeIncompleteSignature, status: http.StatusBadRequest,
		},
		{
			name: "signature dropped", cred: rootCred,
			rewrite: func(q url.Values) { q.Del("Signature") },
			code:    kmsapi.CodeMissingParameter, status: http.StatusBadRequest,
		},
		{
			name: "unknown access key", cred: withSecret(kmsapi.Credential{AccessKeyID: "LTAIunknown"}, "x"),
			code: kmsapi.CodeAccessKeyNotFound, status: http.StatusNotFound,
		},
		{
			name: "sts key without token", cred: withToken(stsCred, ""),
			code: kmsapi.CodeMissingSecurityToken, status: http.StatusBadRequest,
		},
		{
			name: "sts key with another token", cred: withToken(stsCred, "CAIS-someone-else"),
			code: kmsapi.CodeSecurityTokenMismatch, status: http.StatusBadRequest,
		},
		{name: "sts key before expiry", cred: expiring},
		{
			name: "sts key after expiry", cred: expiring, advance: time.Hour,
			code: kmsapi.CodeSecurityTokenExpired, status: http.StatusForbidden,
		},
		{
			name: "signature method", cred: rootCred,
			rewrite: func(q url.Values) { q.Set("SignatureMethod", "HMAC-SHA256") },
			code:    "InvalidSignatureMethod", status: http.StatusBadRequest,
		},
		{
			name: "timestamp format", cred: rootCred,
			rewrite: func(q url.Values) { q.Set("Timestamp", "yesterday") },
			code:    kmsapi.CodeTimestampFormat, status: http.StatusBadRequest,
		},
		{
			name: "timestamp dropped", cred: rootCred,
			rewrite: func(q url.Values) { q.Del("Timestamp") },
			code:    kmsapi.CodeIllegalTimestamp, status: http.StatusBadRequest,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.clock.Step(tc.advance)
			c := e.client(t, tc.cred)
			if tc.rewrite != nil {
				c.SetTransport(rewriteTransport{rewrite: tc.rewrite})
			}
			req := kms.CreateDescribeKeyRequest()
			req.KeyId = keyID
			resp, err := c.DescribeKey(req)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("DescribeKey: %v", err)
				}
				if resp.KeyMetadata.KeyId != keyID {
					t.Fatalf("DescribeKey = %+v", resp.KeyMetadata)
				}
				return
			}
			se := wantServerError(t, err, tc.code, tc.status)
			if !strings.Contains(se.Recommend(), tc.recommend) {
				t.Fatalf("Recommend %q does not contain %q", se.Recommend(), tc.recommend)
			}
			recs := e.records()
			last := recs[len(recs)-1]
			if last.ErrorCode != tc.code || last.EventName != "DescribeKey" || last.RequestID != se.RequestId() {
				t.Fatalf("record of the rejected call: %+v", last)
			}
		})
	}
}

func TestAuthClockSkew(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clock clock.PassiveClock
		code  string
	}{
		{"timestamp within the window", clock.RealClock{}, ""},
		{"timestamp hours away", clocktesting.NewFakePassiveClock(time.Now().Add(-2 * time.Hour)), kmsapi.CodeTimestampExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *kmsapi.Options) {
				o.MaxClockSkew = 15 * time.Minute
				o.Clock = tc.clock
			})
			req := kms.CreateListKeysRequest()
			_, err := e.client(t, rootCred).ListKeys(req)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("ListKeys: %v", err)
				}
				return
			}
			wantServerError(t, err, tc.code, http.StatusBadRequest)
		})
	}
}

// TestRawProtocolErrors sends hand-made requests for what the SDK never sends.
func TestRawProtocolErrors(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name, method, target, body, contentType string
		status                                  int
		code                                    string
	}{
		{"no parameters", http.MethodPost, "/", "", "", http.StatusBadRequest, kmsapi.CodeMissingParameter},
		{"no version", http.MethodGet, "/?Action=DescribeKey", "", "", http.StatusBadRequest, kmsapi.CodeMissingParameter},
		{"bad escape", http.MethodGet, "/?Action=%zz", "", "", http.StatusBadRequest, kmsapi.CodeParseRequest},
		{"xml format", http.MethodGet, "/?Action=DescribeKey&Version=2016-01-20&Format=XML", "", "", http.StatusBadRequest, kmsapi.CodeInvalidFormat},
		{"no access key", http.MethodGet, "/?Action=DescribeKey&Version=2016-01-20", "", "", http.StatusBadRequest, kmsapi.CodeMissingParameter},
		{"put", http.MethodPut, "/?Action=DescribeKey&Version=2016-01-20", "", "", http.StatusForbidden, kmsapi.CodeUnsupportedHTTPMethod},
		{"other path", http.MethodGet, "/v1/keys?Action=DescribeKey&Version=2016-01-20", "", "", http.StatusNotFound, kmsapi.CodeActionNotFound},
		{"json body", http.MethodPost, "/", `{"Action":"DescribeKey"}`, "application/json", http.StatusBadRequest, kmsapi.CodeParseRequest},
		{"form body without action", http.MethodPost, "/", "Version=2016-01-20", "application/x-www-form-urlencoded", http.StatusBadRequest, kmsapi.CodeMissingParameter},
		{"form body, unsigned", http.MethodPost, "/", "Action=ListKeys&Version=2016-01-20&AccessKeyId=" + rootCred.AccessKeyID,
			"application/x-www-form-urlencoded", http.StatusBadRequest, kmsapi.CodeMissingParameter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, e.ts.URL+tc.target, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var got struct{ Code, Message, RequestId, HostId, Recommend string }
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("error body %q is not JSON: %v", body, err)
			}
			if resp.StatusCode != tc.status || got.Code != tc.code || got.Message == "" || got.RequestId == "" ||
				got.HostId != e.host() || !strings.Contains(got.Recommend, tc.code) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if resp.Header.Get("x-acs-request-id") != got.RequestId {
				t.Fatalf("x-acs-request-id %q != RequestId %q", resp.Header.Get("x-acs-request-id"), got.RequestId)
			}
		})
	}
}
