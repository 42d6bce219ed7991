package cs_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkcs "github.com/aliyun/alibaba-cloud-sdk-go/services/cs"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/infra/local/cs"
	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

const (
	clusterID  = "c0123456789abcdef0123456789abcdef"
	kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\n"
)

var (
	now     = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	stsCred = kmsapi.Credential{
		AccessKeyID: "STS.NTESTcs0001", AccessKeySecret: "cs-sts-secret", SecurityToken: "CAIS-cs-token-0001",
		Expiration: now.Add(time.Hour),
		Identity: kmsapi.Identity{Type: kmsapi.IdentityAssumedRole, AccountID: "5068000000000001",
			RoleName: "rekey-function", SessionName: "fc"},
	}
	akCred = kmsapi.Credential{AccessKeyID: "LTAIcsTEST0002", AccessKeySecret: "cs-ak-secret",
		Identity: kmsapi.Identity{Type: kmsapi.IdentityRAMUser, AccountID: "5068000000000001"}}
)

type env struct {
	srv   *cs.Server
	clock *clocktesting.FakePassiveClock
	host  string
	port  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(now)
	srv, err := cs.NewServer(cs.Options{Credentials: []kmsapi.Credential{stsCred, akCred}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(clusterID, kubeconfig); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	u, _ := url.Parse(ts.URL)
	host, port, _ := net.SplitHostPort(u.Host)
	return &env{srv: srv, clock: clk, host: host, port: port}
}

// describe calls DescribeClusterUserKubeconfig with the unmodified SDK client.
func (e *env) describe(t *testing.T, cred kmsapi.Credential, cluster, minutes string) (*sdkcs.DescribeClusterUserKubeconfigResponse, error) {
	t.Helper()
	var (
		client *sdkcs.Client
		err    error
	)
	if cred.SecurityToken != "" {
		client, err = sdkcs.NewClientWithStsToken("cn-hangzhou", cred.AccessKeyID, cred.AccessKeySecret, cred.SecurityToken)
	} else {
		client, err = sdkcs.NewClientWithAccessKey("cn-hangzhou", cred.AccessKeyID, cred.AccessKeySecret)
	}
	if err != nil {
		t.Fatal(err)
	}
	req := sdkcs.CreateDescribeClusterUserKubeconfigRequest()
	req.Domain, req.Port, req.Scheme = e.host, e.port, "HTTP"
	req.ClusterId = cluster
	req.PrivateIpAddress = requests.NewBoolean(true)
	if minutes != "" {
		req.QueryParams["TemporaryDurationMinutes"] = minutes
	}
	return client.DescribeClusterUserKubeconfig(req)
}

func TestDescribeClusterUserKubeconfigWithSDK(t *testing.T) {
	e := newEnv(t)
	for _, cred := range []kmsapi.Credential{stsCred, akCred} {
		resp, err := e.describe(t, cred, clusterID, "15")
		if err != nil {
			t.Fatalf("%s: DescribeClusterUserKubeconfig: %v", cred.AccessKeyID, err)
		}
		if resp.Config != kubeconfig {
			t.Fatalf("config = %q", resp.Config)
		}
		var body struct {
			Expiration string `json:"expiration"`
		}
		if err := json.Unmarshal(resp.GetHttpContentBytes(), &body); err != nil {
			t.Fatal(err)
		}
		if body.Expiration != "2026-11-28T09:15:00Z" {
			t.Fatalf("expiration = %q", body.Expiration)
		}
	}
	calls := e.srv.Calls()
	if len(calls) != 2 || calls[0].ClusterID != clusterID || !calls[0].PrivateIPAddress ||
		calls[0].TemporaryDurationMinutes != 15 || calls[0].AccessKeyID != stsCred.AccessKeyID {
		t.Fatalf("calls = %+v", calls)
	}

	// Without TemporaryDurationMinutes the credential lives years.
	resp, err := e.describe(t, akCred, clusterID, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.GetHttpContentString(), `"expiration":"2029-`) {
		t.Fatalf("default expiration: %s", resp.GetHttpContentString())
	}
}

func TestDescribeClusterUserKubeconfigErrors(t *testing.T) {
	e := newEnv(t)
	wrongSecret := akCred
	wrongSecret.AccessKeySecret = "wrong"
	wrongToken := stsCred
	wrongToken.SecurityToken = "CAIS-other"
	unknown := akCred
	unknown.AccessKeyID = "LTAIunknown"
	for _, tc := range []struct {
		name    string
		cred    kmsapi.Credential
		cluster string
		minutes string
		status  int
		code    string
	}{
		{"unknown cluster", akCred, "cnope", "15", http.StatusNotFound, cs.CodeClusterNotFound},
		{"minutes below 15", akCred, clusterID, "14", http.StatusBadRequest, cs.CodeInvalidParameter},
		{"minutes above 4320", akCred, clusterID, "4321", http.StatusBadRequest, cs.CodeInvalidParameter},
		{"minutes not a number", akCred, clusterID, "soon", http.StatusBadRequest, cs.CodeInvalidParameter},
		{"wrong secret", wrongSecret, clusterID, "15", http.StatusBadRequest, cs.CodeSignatureDoesNotMatch},
		{"wrong token", wrongToken, clusterID, "15", http.StatusBadRequest, cs.CodeSecurityTokenMismatch},
		{"unknown access key", unknown, clusterID, "15", http.StatusNotFound, cs.CodeAccessKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.describe(t, tc.cred, tc.cluster, tc.minutes)
			wantError(t, err, tc.status, tc.code)
		})
	}
	e.clock.SetTime(now.Add(2 * time.Hour))
	_, err := e.describe(t, stsCred, clusterID, "15")
	wantError(t, err, http.StatusForbidden, cs.CodeSecurityTokenExpired)
	if n := len(e.srv.Calls()); n != 0 {
		t.Fatalf("%d failed calls recorded", n)
	}
}

// wantError checks an SDK error by HTTP status and the lower-case code in the
// body (the SDK's ErrorCode reads only "Code").
func wantError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("got %T %v, want a *ServerError", err, err)
	}
	var body struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"requestId"`
	}
	if jerr := json.Unmarshal([]byte(se.Message()), &body); jerr != nil {
		t.Fatalf("error body %q: %v", se.Message(), jerr)
	}
	if se.HttpStatus() != status || body.Code != code || body.Message == "" || body.RequestID == "" {
		t.Fatalf("got %d %+v, want %d %s", se.HttpStatus(), body, status, code)
	}
}

func TestRawRequests(t *testing.T) {
	e := newEnv(t)
	base := "http://" + net.JoinHostPort(e.host, e.port)
	for _, tc := range []struct {
		method, path, auth string
		status             int
	}{
		{http.MethodGet, "/k8s/" + clusterID + "/user_config", "", http.StatusBadRequest},
		{http.MethodGet, "/k8s/" + clusterID + "/user_config", "acs LTAIcsTEST0002", http.StatusBadRequest},
		{http.MethodGet, "/clusters/" + clusterID, "", http.StatusNotFound},
		{http.MethodGet, "/k8s//user_config", "", http.StatusNotFound},
		{http.MethodPost, "/k8s/" + clusterID + "/user_config", "", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s (%q): status %d, want %d", tc.method, tc.path, tc.auth, resp.StatusCode, tc.status)
		}
	}
}

func TestRegisterValidates(t *testing.T) {
	srv, err := cs.NewServer(cs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{{"", kubeconfig}, {"a/b", kubeconfig}, {"c1", ""}} {
		if err := srv.Register(bad[0], bad[1]); err == nil {
			t.Errorf("Register(%q, %q) succeeded", bad[0], bad[1])
		}
	}
	if _, err := cs.NewServer(cs.Options{Credentials: []kmsapi.Credential{{AccessKeyID: "x"}}}); err == nil {
		t.Fatal("a credential without secret was accepted")
	}
}
