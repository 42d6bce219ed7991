package faultproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDelayHoldsThenForwards: a slow response reaches upstream after the delay; a client that
// gives up first gets nothing and the request never reaches upstream; Requests counts both.
func TestDelayHoldsThenForwards(t *testing.T) {
	p, u := start(t)
	p.SetRules(Rule{Method: "PATCH", Every: 1, Fail: 1, Delay: 300 * time.Millisecond})
	c := client()
	began := time.Now()
	resp, body, err := do(t, c, "PATCH", p.URL()+"/api/v1/namespaces/a/secrets/x")
	if err != nil || resp.StatusCode != 200 || body != "upstream /api/v1/namespaces/a/secrets/x" {
		t.Fatalf("slow response: %v %q %v", resp, body, err)
	}
	if took := time.Since(began); took < 300*time.Millisecond {
		t.Fatalf("answered after %s, want at least the 300ms delay", took)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PATCH", p.URL()+"/api/v1/namespaces/a/secrets/y", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a client that gave up during the delay got an answer")
	}
	time.Sleep(400 * time.Millisecond) // longer than the delay: a forwarded request would have arrived by now
	if u.count("PATCH /api/v1/namespaces/a/secrets/y") != 0 {
		t.Fatal("a request abandoned during its delay reached upstream")
	}
	if p.Requests("PATCH") != 2 || p.Requests("GET") != 0 || p.Forwarded() != 1 || p.Injected() != 2 {
		t.Fatalf("PATCH %d GET %d forwarded %d injected %d, want 2, 0, 1, 2", p.Requests("PATCH"), p.Requests("GET"), p.Forwarded(), p.Injected())
	}
}

// TestDelayWithStatus: a delayed fault with a status answers that status after the delay.
func TestDelayWithStatus(t *testing.T) {
	p, u := start(t)
	p.SetRules(Rule{Every: 1, Fail: 1, Delay: 100 * time.Millisecond, Status: 503})
	began := time.Now()
	resp, _, err := do(t, client(), "GET", p.URL()+"/x")
	if err != nil || resp.StatusCode != 503 || time.Since(began) < 100*time.Millisecond {
		t.Fatalf("delayed 503: %v %v after %s", resp, err, time.Since(began))
	}
	if u.count("GET /x") != 0 {
		t.Fatal("a delayed 503 reached upstream")
	}
}

// TestStartTLSServesItsCertificate: a client that trusts CertificatePEM reaches upstream through
// a TLS proxy; a plain proxy has no certificate.
func TestStartTLSServesItsCertificate(t *testing.T) {
	u := &upstream{hits: map[string]int{}}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	p, err := StartTLS(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	pool := x509.NewCertPool()
	if !strings.HasPrefix(p.URL(), "https://") || !pool.AppendCertsFromPEM(p.CertificatePEM()) {
		t.Fatalf("URL %s, certificate %q", p.URL(), p.CertificatePEM())
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	if resp, body, err := do(t, c, "GET", p.URL()+"/ok"); err != nil || resp.StatusCode != 200 || body != "upstream /ok" {
		t.Fatalf("through the TLS proxy: %v %q %v", resp, body, err)
	}
	plain, _ := start(t)
	if plain.CertificatePEM() != nil {
		t.Fatal("a plain HTTP proxy reported a certificate")
	}
}
