package actiontrail

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/alicloud"
)

func TestNewSDKClientConfig(t *testing.T) {
	creds := alicloud.Credentials{AccessKeyID: "LTAItrail", AccessKeySecret: "trail-secret"}
	for _, tc := range []struct {
		cfg          Config
		wantEndpoint string
		wantErr      string
	}{
		{Config{Region: "cn-hangzhou", Credentials: creds}, "actiontrail-vpc.cn-hangzhou.aliyuncs.com", ""},
		{Config{Region: "cn-hangzhou", PublicEndpoint: true, Credentials: creds}, "actiontrail.cn-hangzhou.aliyuncs.com", ""},
		{Config{Region: "cn-hangzhou", Endpoint: "127.0.0.1:8080", Scheme: "HTTP", Credentials: creds}, "127.0.0.1:8080", ""},
		{Config{Region: "cn-hangzhou", Endpoint: "trail.example.com", Scheme: "HTTP", Credentials: creds}, "",
			"scheme HTTP with endpoint trail.example.com"},
		{Config{Region: "cn-hangzhou"}, "", "actiontrail config: credentials are required"},
		{Config{Credentials: creds}, "", "actiontrail config: region is required"},
	} {
		c, err := NewSDKClient(tc.cfg)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewSDKClient(%+v) error = %v, want %q", tc.cfg, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.Endpoint() != tc.wantEndpoint {
			t.Fatalf("NewSDKClient(%+v) = %v, %v; want endpoint %s", tc.cfg, c, err, tc.wantEndpoint)
		}
	}
}

func TestLookupEventsThroughTheSharedSDKClient(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		seen = append(seen, q.Get("Action")+" "+q.Get("AccessKeyId")+" "+q.Get("SecurityToken")+" "+r.Header.Get("User-Agent"))
		mu.Unlock()
		fmt.Fprint(w, `{"RequestId":"r1","NextToken":"","Events":[{"eventId":"e1","eventName":"Encrypt","eventType":"ApiCall",`+
			`"eventTime":"2025-03-01T08:00:00Z","serviceName":"Kms","userIdentity":{"type":"assumed-role"}}]}`)
	}))
	defer ts.Close()
	// Per-invocation credentials (Function Compute): the current ones sign each page.
	creds := alicloud.CredentialsFunc(func(context.Context) (alicloud.Credentials, error) {
		return alicloud.Credentials{AccessKeyID: "STS.fc", AccessKeySecret: "fc-secret", SecurityToken: "fc-token"}, nil
	})
	c, err := NewSDKClient(Config{Region: "cn-hangzhou", Endpoint: strings.TrimPrefix(ts.URL, "http://"), Scheme: "HTTP",
		Credentials: creds, CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.LookupEvents(context.Background(), Query{Start: time.Now().Add(-time.Hour), ResourceName: "key-1"})
	if err != nil {
		t.Fatalf("LookupEvents: %v", err)
	}
	if len(res.Events) != 1 || res.Events[0].EventName != "Encrypt" {
		t.Fatalf("LookupEvents = %+v", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "LookupEvents STS.fc fc-token ") || !strings.Contains(seen[0], "rekey/verify") {
		t.Fatalf("server saw %q", seen)
	}
}
