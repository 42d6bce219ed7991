package faultproxy

import (
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// upstream counts the requests it serves per path.
type upstream struct {
	mu   sync.Mutex
	hits map[string]int
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.hits[r.Method+" "+r.URL.Path]++
	u.mu.Unlock()
	_, _ = io.WriteString(w, "upstream "+r.URL.Path)
}

func (u *upstream) count(k string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[k]
}

func start(t *testing.T) (*Proxy, *upstream) {
	t.Helper()
	u := &upstream{hits: map[string]int{}}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	p, err := Start(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, u
}

// client does not reuse connections, so a dropped one cannot leak into the next request.
func client() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func do(t *testing.T, c *http.Client, method, url string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b), nil
}

func TestForwardsWithoutRules(t *testing.T) {
	p, u := start(t)
	resp, body, err := do(t, client(), "GET", p.URL()+"/api/v1/secrets")
	if err != nil || resp.StatusCode != 200 || body != "upstream /api/v1/secrets" {
		t.Fatalf("got %v %q %v", resp, body, err)
	}
	if u.count("GET /api/v1/secrets") != 1 || p.Forwarded() != 1 || p.Injected() != 0 {
		t.Fatalf("upstream=%d forwarded=%d injected=%d", u.count("GET /api/v1/secrets"), p.Forwarded(), p.Injected())
	}
}

func TestStatusFaultsFollowEveryAndFail(t *testing.T) {
	p, u := start(t)
	p.SetRules(Rule{Method: "PATCH", PathContains: "/secrets/", Every: 4, Fail: 2, Status: 429, RetryAfter: 3})
	c := client()
	var codes []int
	for range 8 {
		resp, body, err := do(t, c, "PATCH", p.URL()+"/api/v1/namespaces/a/secrets/x")
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 {
			if resp.Header.Get("Retry-After") != "3" || !strings.Contains(body, `"reason":"TooManyRequests"`) || !strings.Contains(body, `"code":429`) {
				t.Fatalf("429 answer: Retry-After %q body %s", resp.Header.Get("Retry-After"), body)
			}
		}
	}
	want := []int{429, 429, 200, 200, 429, 429, 200, 200}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("codes = %v, want %v", codes, want)
		}
	}
	// Requests the rule does not match pass untouched and are not counted by it.
	for _, r := range [][2]string{{"GET", "/api/v1/namespaces/a/secrets/x"}, {"PATCH", "/api/v1/namespaces/a/configmaps/x"}} {
		if resp, _, err := do(t, c, r[0], p.URL()+r[1]); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s: %v %v", r[0], r[1], resp, err)
		}
	}
	if p.Injected() != 4 || p.Forwarded() != 6 || u.count("PATCH /api/v1/namespaces/a/secrets/x") != 4 {
		t.Fatalf("injected=%d forwarded=%d upstream patches=%d, want 4, 6, 4", p.Injected(), p.Forwarded(), u.count("PATCH /api/v1/namespaces/a/secrets/x"))
	}
}

func TestLimitStopsARule(t *testing.T) {
	p, _ := start(t)
	p.SetRules(Rule{Every: 1, Fail: 1, Status: 503, Limit: 3})
	c := client()
	var codes []int
	for range 5 {
		resp, body, err := do(t, c, "GET", p.URL()+"/x")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 503 && !strings.Contains(body, "ServiceUnavailable") {
			t.Fatalf("503 body %s", body)
		}
		codes = append(codes, resp.StatusCode)
	}
	if codes[0] != 503 || codes[2] != 503 || codes[3] != 200 || codes[4] != 200 || p.Injected() != 3 {
		t.Fatalf("codes = %v injected=%d, want three 503 then 200s", codes, p.Injected())
	}
	p.SetRules() // nil rules forward everything
	if resp, _, err := do(t, c, "GET", p.URL()+"/x"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after SetRules(): %v %v", resp, err)
	}
}

func TestDroppedConnectionIsNotForwarded(t *testing.T) {
	p, u := start(t)
	p.SetRules(Rule{Method: "PATCH", Every: 1, Fail: 1, Status: 0})
	_, _, err := do(t, client(), "PATCH", p.URL()+"/api/v1/namespaces/a/secrets/x")
	if err == nil {
		t.Fatal("a dropped connection must fail the request")
	}
	if u.count("PATCH /api/v1/namespaces/a/secrets/x") != 0 || p.Injected() != 1 || p.Forwarded() != 0 {
		t.Fatalf("upstream=%d injected=%d forwarded=%d: the request must not reach upstream",
			u.count("PATCH /api/v1/namespaces/a/secrets/x"), p.Injected(), p.Forwarded())
	}
}

func TestForwardThenDropReachesUpstreamButLosesTheAnswer(t *testing.T) {
	p, u := start(t)
	p.SetRules(Rule{Method: "PATCH", Every: 2, Fail: 1, ForwardThenDrop: true, Status: 429})
	c := client()
	_, _, err := do(t, c, "PATCH", p.URL()+"/api/v1/namespaces/a/secrets/x")
	if err == nil {
		t.Fatal("the client must not see the answer")
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("err = %v, want a connection error", err)
	}
	if u.count("PATCH /api/v1/namespaces/a/secrets/x") != 1 {
		t.Fatal("the request must have reached upstream")
	}
	if resp, body, err := do(t, c, "PATCH", p.URL()+"/api/v1/namespaces/a/secrets/x"); err != nil || resp.StatusCode != 200 || body == "" {
		t.Fatalf("second request: %v %q %v", resp, body, err)
	}
	if p.Injected() != 1 || p.Forwarded() != 2 || u.count("PATCH /api/v1/namespaces/a/secrets/x") != 2 {
		t.Fatalf("injected=%d forwarded=%d upstream=%d, want 1, 2, 2", p.Injected(), p.Forwarded(), u.count("PATCH /api/v1/namespaces/a/secrets/x"))
	}
}

func TestTLSUpstreamIsVerified(t *testing.T) {
	srv := httptest.NewTLSServer(&upstream{hits: map[string]int{}})
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	p, err := Start(srv.URL, ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if resp, body, err := do(t, client(), "GET", p.URL()+"/ok"); err != nil || resp.StatusCode != 200 || body != "upstream /ok" {
		t.Fatalf("verified TLS upstream: %v %q %v", resp, body, err)
	}

	bad, err := Start(srv.URL, nil) // system roots: the test certificate is not trusted
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bad.Close)
	if resp, _, err := do(t, client(), "GET", bad.URL()+"/ok"); err != nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("unverifiable upstream: %v %v, want 502 from the proxy", resp, err)
	}

	if _, err := Start(srv.URL, []byte("not a pem")); err == nil {
		t.Fatal("Start accepted a CA without certificates")
	}
	if _, err := Start("http://[::1", nil); err == nil {
		t.Fatal("Start accepted a bad URL")
	}
}
