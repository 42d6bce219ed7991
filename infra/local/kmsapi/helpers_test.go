package kmsapi_test

import (
	"errors"
	clocktesting "k8s.io/utils/clock/testing"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/actiontrail"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

const (
	testRegion  = "cn-shanghai"
	testAccount = "5068000000000001"
)

// fakeClock is a settable clock; tests move it instead of sleeping.
type fakeClock = clocktesting.FakeClock

func newFakeClock() *fakeClock {
	return clocktesting.NewFakeClock(time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC))
}

var (
	rootCred = kmsapi.Credential{
		AccessKeyID:     "LTAIrootTEST0001",
		AccessKeySecret: "root-secret-0001",
		Identity: kmsapi.Identity{
			Type: kmsapi.IdentityRootAccount, AccountID: testAccount, PrincipalID: testAccount, UserName: "root",
		},
	}
	userCred = kmsapi.Credential{
		AccessKeyID:     "LTAIuserTEST0002",
		AccessKeySecret: "user-secret-0002",
		Identity: kmsapi.Identity{
			Type: kmsapi.IdentityRAMUser, AccountID: testAccount, PrincipalID: "200000000000001", UserName: "rekey-operator",
		},
	}
	stsCred = kmsapi.Credential{
		AccessKeyID:     "STS.NTESTrekey0003",
		AccessKeySecret: "sts-secret-0003",
		SecurityToken:   "CAIS-test-security-token-0003",
		Identity: kmsapi.Identity{
			Type: kmsapi.IdentityAssumedRole, AccountID: testAccount, PrincipalID: "300000000000001:rekey",
			RoleName: "aliyuncsmanagedsecurityrole", RoleID: "300000000000001", SessionName: "rekey",
		},
	}
)

// env is a Server behind an httptest server with a fake clock and the
// records OnRecord saw.
type env struct {
	srv   *kmsapi.Server
	ts    *httptest.Server
	clock *fakeClock
	opts  kmsapi.Options

	mu   sync.Mutex
	recs []kmsapi.Record
}

func newEnv(t *testing.T, tweak func(*kmsapi.Options)) *env {
	t.Helper()
	e := &env{clock: newFakeClock()}
	opts := kmsapi.Options{
		Region:      testRegion,
		AccountID:   testAccount,
		Credentials: []kmsapi.Credential{rootCred, userCred, stsCred},
		Clock:       e.clock,
		OnRecord: func(r kmsapi.Record) {
			e.mu.Lock()
			e.recs = append(e.recs, r)
			e.mu.Unlock()
		},
	}
	if tweak != nil {
		tweak(&opts)
	}
	e.opts = opts
	srv, err := kmsapi.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	e.srv = srv
	e.ts = httptest.NewServer(srv)
	t.Cleanup(e.ts.Close)
	return e
}

func (e *env) host() string { return strings.TrimPrefix(e.ts.URL, "http://") }

func (e *env) records() []kmsapi.Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]kmsapi.Record(nil), e.recs...)
}

// client returns an unmodified SDK KMS client for cred pointed at the server.
func (e *env) client(t *testing.T, cred kmsapi.Credential) *kms.Client {
	t.Helper()
	var (
		c   *kms.Client
		err error
	)
	if cred.SecurityToken != "" {
		c, err = kms.NewClientWithStsToken(testRegion, cred.AccessKeyID, cred.AccessKeySecret, cred.SecurityToken)
	} else {
		c, err = kms.NewClientWithAccessKey(testRegion, cred.AccessKeyID, cred.AccessKeySecret)
	}
	if err != nil {
		t.Fatalf("new kms client: %v", err)
	}
	c.Domain = e.host()
	c.GetConfig().WithScheme("HTTP")
	return c
}

// trailClient returns an unmodified SDK ActionTrail client pointed at the server.
func (e *env) trailClient(t *testing.T, cred kmsapi.Credential) *actiontrail.Client {
	t.Helper()
	c, err := actiontrail.NewClientWithAccessKey(testRegion, cred.AccessKeyID, cred.AccessKeySecret)
	if err != nil {
		t.Fatalf("new actiontrail client: %v", err)
	}
	c.Domain = e.host()
	c.GetConfig().WithScheme("HTTP")
	return c
}

// wantServerError asserts err is an SDK ServerError with code and status.
func wantServerError(t *testing.T, err error, code string, status int) *sdkerrors.ServerError {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %s (%d)", code, status)
	}
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("got %T %v, want *errors.ServerError %s", err, err, code)
	}
	if se.ErrorCode() != code || se.HttpStatus() != status {
		t.Fatalf("got %s (%d): %s, want %s (%d)", se.ErrorCode(), se.HttpStatus(), se.Message(), code, status)
	}
	if se.RequestId() == "" || se.HostId() == "" {
		t.Fatalf("error lacks RequestId/HostId: %v", se)
	}
	return se
}

// createKey creates a key with the SDK and returns its metadata.
func createKey(t *testing.T, c *kms.Client, tweak func(*kms.CreateKeyRequest)) kms.KeyMetadata {
	t.Helper()
	req := kms.CreateCreateKeyRequest()
	req.Description = "rekey test key"
	if tweak != nil {
		tweak(req)
	}
	resp, err := c.CreateKey(req)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return resp.KeyMetadata
}

func describeKey(t *testing.T, c *kms.Client, keyID string) kms.KeyMetadata {
	t.Helper()
	req := kms.CreateDescribeKeyRequest()
	req.KeyId = keyID
	resp, err := c.DescribeKey(req)
	if err != nil {
		t.Fatalf("DescribeKey: %v", err)
	}
	return resp.KeyMetadata
}

func encrypt(c *kms.Client, keyID, plaintext, ctx string) (*kms.EncryptResponse, error) {
	req := kms.CreateEncryptRequest()
	req.KeyId, req.Plaintext, req.EncryptionContext = keyID, plaintext, ctx
	return c.Encrypt(req)
}

func decrypt(c *kms.Client, blob, ctx string) (*kms.DecryptResponse, error) {
	req := kms.CreateDecryptRequest()
	req.CiphertextBlob, req.EncryptionContext = blob, ctx
	return c.Decrypt(req)
}

func createKeyVersion(t *testing.T, c *kms.Client, keyID string) kms.KeyVersion {
	t.Helper()
	req := kms.CreateCreateKeyVersionRequest()
	req.KeyId = keyID
	resp, err := c.CreateKeyVersion(req)
	if err != nil {
		t.Fatalf("CreateKeyVersion: %v", err)
	}
	return resp.KeyVersion
}

func listKeyVersions(t *testing.T, c *kms.Client, keyID string) []kms.KeyVersion {
	t.Helper()
	req := kms.CreateListKeyVersionsRequest()
	req.KeyId = keyID
	req.PageSize = "100"
	resp, err := c.ListKeyVersions(req)
	if err != nil {
		t.Fatalf("ListKeyVersions: %v", err)
	}
	return resp.KeyVersions.KeyVersion
}

const iso = "2006-01-02T15:04:05Z"
