package alicloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkcs "github.com/aliyun/alibaba-cloud-sdk-go/services/cs"
	sdkkms "github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/shared/retry"
)

// seen is what a test server saw of one request.
type seen struct {
	host, path, action, accessKeyID, token, auth string
}

// recorder is an httptest server that records requests and answers with respond.
type recorder struct {
	ts   *httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newRecorder(t *testing.T, respond func(w http.ResponseWriter, r *http.Request)) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{host: r.Host, path: r.URL.Path, action: q.Get("Action"), accessKeyID: q.Get("AccessKeyId"),
			token: q.Get("SecurityToken") + r.Header.Get("x-acs-security-token"), auth: r.Header.Get("Authorization")})
		rec.mu.Unlock()
		respond(w, r)
	}))
	t.Cleanup(rec.ts.Close)
	return rec
}

func (rec *recorder) endpoint() string { return strings.TrimPrefix(rec.ts.URL, "http://") }

func (rec *recorder) last() seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.reqs[len(rec.reqs)-1]
}

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDoRPCWithCredentialsPerCall(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"KeyMetadata":{"KeyId":"key-1","PrimaryKeyVersion":"v1"},"RequestId":"r1"}`)
	})
	// Function Compute hands out the invocation's credentials; each call uses the current ones.
	var n atomic.Int32
	creds := CredentialsFunc(func(context.Context) (Credentials, error) {
		i := n.Add(1)
		return Credentials{AccessKeyID: fmt.Sprintf("STS.fc%d", i), AccessKeySecret: "fc-secret", SecurityToken: fmt.Sprintf("fc-token-%d", i)}, nil
	})
	c := newTestClient(t, Config{Product: KMS, Region: "cn-hangzhou", Endpoint: rec.endpoint(), Scheme: SchemeHTTP, Credentials: creds})
	for i := 1; i <= 2; i++ {
		req := sdkkms.CreateDescribeKeyRequest()
		req.KeyId = "key-1"
		resp := sdkkms.CreateDescribeKeyResponse()
		if err := c.Do(context.Background(), req, resp); err != nil {
			t.Fatalf("Do: %v", err)
		}
		if resp.KeyMetadata.PrimaryKeyVersion != "v1" {
			t.Fatalf("response not decoded: %+v", resp.KeyMetadata)
		}
		got := rec.last()
		if got.host != rec.endpoint() || got.action != "DescribeKey" || got.accessKeyID != fmt.Sprintf("STS.fc%d", i) ||
			got.token != fmt.Sprintf("fc-token-%d", i) {
			t.Fatalf("call %d: server saw %+v", i, got)
		}
	}
	if c.CredentialsSource() != "credentials function" {
		t.Fatalf("CredentialsSource() = %q", c.CredentialsSource())
	}
}

func TestDoROAWithDomainAndPortApart(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/c-denied/user_config") {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"code":"ErrorRamPolicyForbidden","message":"the caller lacks cs:DescribeClusterUserKubeconfig","requestId":"r-cs"}`)
			return
		}
		fmt.Fprint(w, `{"config":"apiVersion: v1\nkind: Config\n"}`)
	})
	sts := Credentials{AccessKeyID: "STS.roa", AccessKeySecret: "roa-secret", SecurityToken: "roa-token"}
	c := newTestClient(t, Config{Product: CS, Region: "cn-hangzhou", Endpoint: rec.endpoint(), Scheme: SchemeHTTP, Credentials: sts})
	req := sdkcs.CreateDescribeClusterUserKubeconfigRequest()
	req.ClusterId = "c-ok"
	req.QueryParams["TemporaryDurationMinutes"] = "60"
	resp := sdkcs.CreateDescribeClusterUserKubeconfigResponse()
	if err := c.Do(context.Background(), req, resp); err != nil {
		t.Fatalf("Do(ROA): %v", err)
	}
	got := rec.last()
	if resp.Config == "" || got.host != rec.endpoint() || got.path != "/k8s/c-ok/user_config" ||
		!strings.HasPrefix(got.auth, "acs STS.roa:") || got.token != "roa-token" {
		t.Fatalf("ROA call: server saw %+v, config %q", got, resp.Config)
	}

	req = sdkcs.CreateDescribeClusterUserKubeconfigRequest()
	req.ClusterId = "c-denied"
	err := c.Do(context.Background(), req, sdkcs.CreateDescribeClusterUserKubeconfigResponse())
	if ErrorCode(err) != "ErrorRamPolicyForbidden" || retry.Classify(err) != retry.Denied {
		t.Fatalf("ROA error = %v (class %v), want the lower-case code and Denied", err, retry.Classify(err))
	}
}

func TestDoCredentialFailureSendsNothing(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{}`) })
	boom := errors.New("fc context has no credentials")
	c := newTestClient(t, Config{Product: KMS, Region: "cn-hangzhou", Endpoint: rec.endpoint(), Scheme: SchemeHTTP,
		Credentials: CredentialsFunc(func(context.Context) (Credentials, error) { return Credentials{}, boom })})
	err := c.Do(context.Background(), sdkkms.CreateDescribeKeyRequest(), sdkkms.CreateDescribeKeyResponse())
	var ce *CredentialsError
	if !errors.As(err, &ce) || !errors.Is(err, boom) || ce.Source != "credentials function" {
		t.Fatalf("Do() error = %v, want a CredentialsError wrapping the cause", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != 0 {
		t.Fatalf("a request without credentials was sent: %+v", rec.reqs)
	}
}

func TestDoPerCallTimeoutIsRetriable(t *testing.T) {
	release := make(chan struct{})
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	c := newTestClient(t, Config{Product: KMS, Region: "cn-hangzhou", Endpoint: rec.endpoint(), Scheme: SchemeHTTP,
		Credentials: testCreds, CallTimeout: 100 * time.Millisecond})
	start := time.Now()
	err := c.Do(context.Background(), sdkkms.CreateDescribeKeyRequest(), sdkkms.CreateDescribeKeyResponse())
	if !errors.Is(err, context.DeadlineExceeded) || retry.Classify(err) != retry.Retriable {
		t.Fatalf("Do() = %v (class %v), want a retriable deadline", err, retry.Classify(err))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Do() took %v", d)
	}
	if strings.Contains(err.Error(), "AccessKeyId") || strings.Contains(err.Error(), "?") {
		t.Fatalf("error %q shows the request URL", err)
	}
}

func TestSetPort(t *testing.T) {
	rpc := sdkkms.CreateDescribeKeyRequest()
	roa := sdkcs.CreateDescribeClusterUserKubeconfigRequest()
	for _, r := range []requests.AcsRequest{rpc, roa, rpc} {
		if err := setPort(r, "8443"); err != nil || r.GetPort() != "8443" {
			t.Fatalf("setPort(%T) = %v, port %q", r, err, r.GetPort())
		}
	}
	if err := setPort(&sdkkms.DescribeKeyRequest{}, "1"); err == nil {
		t.Fatal("setPort through a nil embedded request succeeded")
	}
}
