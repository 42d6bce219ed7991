package kms_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdkkms "github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/retry"
)

const (
	testRegion  = "cn-shanghai"
	testAccount = "5068000000000001"
)

var (
	akCred = kmsapi.Credential{
		AccessKeyID:     "LTAIrekeyKMSTEST01",
		AccessKeySecret: "ak-secret-do-not-log-01",
		Identity: kmsapi.Identity{
			Type: kmsapi.IdentityRAMUser, AccountID: testAccount, PrincipalID: "200000000000001", UserName: "rekey",
		},
	}
	stsCred = kmsapi.Credential{
		AccessKeyID:     "STS.NrekeyKMSTEST02",
		AccessKeySecret: "sts-secret-do-not-log-02",
		SecurityToken:   "CAIS-sts-token-do-not-log-02",
		Identity: kmsapi.Identity{
			Type: kmsapi.IdentityAssumedRole, AccountID: testAccount, PrincipalID: "300000000000001:rekey",
			RoleName: "rekey-kms-plugin", RoleID: "300000000000001", SessionName: "rekey",
		},
	}
)

// instantTimer satisfies backoff.Timer and fires at once; it is safe for concurrent retry loops.
type instantTimer struct{}

var firedC = func() chan time.Time { c := make(chan time.Time); close(c); return c }()

func (instantTimer) C() <-chan time.Time { return firedC }
func (instantTimer) Start(time.Duration) {}
func (instantTimer) Stop()               {}

// env is the local KMS server behind an httptest server, with one key.
type env struct {
	srv   *kmsapi.Server
	ts    *httptest.Server
	keyID string
}

// newEnv starts the server; wrap, when set, sits in front of it (fault injection).
func newEnv(t *testing.T, wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	srv, err := kmsapi.NewServer(kmsapi.Options{
		Region: testRegion, AccountID: testAccount, Credentials: []kmsapi.Credential{akCred, stsCred},
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	keyID, _, err := srv.EnsureKey("alias/rekey-test")
	if err != nil {
		t.Fatalf("EnsureKey: %v", err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return &env{srv: srv, ts: ts, keyID: keyID}
}

func (e *env) host() string { return strings.TrimPrefix(e.ts.URL, "http://") }

// config is a kms.Config for cred pointed at the server over HTTP, with instant retries.
func (e *env) config(cred kmsapi.Credential) kms.Config {
	return kms.Config{
		Region:   testRegion,
		Endpoint: e.host(),
		Scheme:   kms.SchemeHTTP,
		Credentials: kms.Credentials{
			AccessKeyID: cred.AccessKeyID, AccessKeySecret: cred.AccessKeySecret, SecurityToken: cred.SecurityToken,
		},
		CallTimeout: 2 * time.Second,
		Retry:       retry.Policy{MaxAttempts: 4, Timer: instantTimer{}},
	}
}

func (e *env) client(t *testing.T, cred kmsapi.Credential, tweak func(*kms.Config)) *kms.SDKClient {
	t.Helper()
	cfg := e.config(cred)
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := kms.NewSDKClient(cfg)
	if err != nil {
		t.Fatalf("NewSDKClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// admin is an unmodified SDK client for the operations rekey does not wrap.
func (e *env) admin(t *testing.T) *sdkkms.Client {
	t.Helper()
	c, err := sdkkms.NewClientWithAccessKey(testRegion, akCred.AccessKeyID, akCred.AccessKeySecret)
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	c.Domain = e.host()
	c.GetConfig().WithScheme("HTTP")
	return c
}

func (e *env) createKeyVersion(t *testing.T) string {
	t.Helper()
	req := sdkkms.CreateCreateKeyVersionRequest()
	req.KeyId = e.keyID
	resp, err := e.admin(t).CreateKeyVersion(req)
	if err != nil {
		t.Fatalf("CreateKeyVersion: %v", err)
	}
	return resp.KeyVersion.KeyVersionId
}

func (e *env) disableKey(t *testing.T) {
	t.Helper()
	req := sdkkms.CreateDisableKeyRequest()
	req.KeyId = e.keyID
	if _, err := e.admin(t).DisableKey(req); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
}

// secrets are strings that must never appear in an error or a log.
func secrets(cred kmsapi.Credential) []string {
	s := []string{cred.AccessKeySecret, cred.AccessKeyID, "Signature=", "Signature%3D", "AccessKeyId=", "AccessKeyId%3D"}
	if cred.SecurityToken != "" {
		s = append(s, cred.SecurityToken)
	}
	return s
}

func assertClean(t *testing.T, what, text string, forbidden ...string) {
	t.Helper()
	for _, f := range forbidden {
		if f != "" && strings.Contains(text, f) {
			t.Fatalf("%s contains %q:\n%s", what, f, text)
		}
	}
	if strings.Contains(text, "\n") {
		t.Fatalf("%s spans several lines:\n%s", what, text)
	}
}
