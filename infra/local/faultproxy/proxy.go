package faultproxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Rule injects a fault into matching requests: of every Every matching requests, the first Fail
// are answered with Status (and Retry-After when RetryAfter > 0) or, when Status is 0, with a
// dropped connection. With ForwardThenDrop they are forwarded and the answer is dropped instead.
// With Delay they are held for a while first (a slow response), then forwarded when Status is 0.
type Rule struct {
	// Method matches the HTTP method ("" any).
	Method string
	// PathContains matches a substring of the URL path ("" any).
	PathContains string
	// Every and Fail: of every Every matching requests, the first Fail get the fault.
	Every, Fail int
	// Status is the injected answer's HTTP status; 0 drops the connection without forwarding.
	Status int
	// RetryAfter, in seconds, is sent with Status when positive.
	RetryAfter int
	// ForwardThenDrop forwards the request upstream, waits for the whole answer and then drops the
	// client's connection: the server applied the request, the client sees a reset (a lost
	// response). Status and RetryAfter are ignored.
	ForwardThenDrop bool
	// Limit stops the rule after this many faults (0: no limit).
	Limit int64
	// Delay makes the fault a slow response: the request waits this long (or until the client
	// gives up) and is then forwarded, or answered with Status when Status is set. A client that
	// gives up during the delay gets nothing and the request never reaches the server.
	Delay time.Duration
}

type rule struct {
	Rule
	seen, injected atomic.Int64
}

// Proxy forwards to an upstream server, injecting faults. It is safe for concurrent use.
type Proxy struct {
	srv      *httptest.Server
	rp       *httputil.ReverseProxy
	mu       sync.RWMutex
	rules    []*rule
	injected atomic.Int64
	served   atomic.Int64
	byMethod sync.Map // HTTP method -> *atomic.Int64 of requests received
}

// Start starts a proxy on a loopback port in front of upstream (an https URL verified with caPEM,
// or an http URL with caPEM nil). It speaks plain HTTP. Close it when done.
func Start(upstream string, caPEM []byte) (*Proxy, error) {
	return startProxy(upstream, caPEM, false)
}

// StartTLS is Start with a proxy that speaks HTTPS (HTTP/1.1) with a certificate for 127.0.0.1
// signed by itself (see CertificatePEM): kubeconfig-based clients send their credentials only
// over TLS.
func StartTLS(upstream string, caPEM []byte) (*Proxy, error) {
	return startProxy(upstream, caPEM, true)
}

// CertificatePEM returns the PEM of the certificate a StartTLS proxy serves (to trust as its CA);
// nil for a plain HTTP proxy.
func (p *Proxy) CertificatePEM() []byte {
	if p.srv.TLS == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
}

func startProxy(upstream string, caPEM []byte, useTLS bool) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("parse upstream %q: %w", upstream, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("faultproxy: no certificate in CA PEM")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	p := &Proxy{rp: httputil.NewSingleHostReverseProxy(u)}
	p.rp.Transport = tr
	if useTLS {
		p.srv = httptest.NewTLSServer(p)
	} else {
		p.srv = httptest.NewServer(p)
	}
	return p, nil
}

// URL is the proxy's address (http://127.0.0.1:PORT, or https:// for StartTLS).
func (p *Proxy) URL() string { return p.srv.URL }

// Close stops the proxy.
func (p *Proxy) Close() { p.srv.Close() }

// SetRules replaces the fault rules; nil forwards everything.
func (p *Proxy) SetRules(rules ...Rule) {
	rs := make([]*rule, len(rules))
	for i, r := range rules {
		rs[i] = &rule{Rule: r}
	}
	p.mu.Lock()
	p.rules = rs
	p.mu.Unlock()
}

// drop closes the client's connection without an answer (503 when the connection cannot be taken
// over, which HTTP/2 does not allow).
func (p *Proxy) drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

// Injected returns the number of faults injected so far.
func (p *Proxy) Injected() int64 { return p.injected.Load() }

// Forwarded returns the number of requests forwarded upstream, ForwardThenDrop faults included.
func (p *Proxy) Forwarded() int64 { return p.served.Load() }

// Requests returns the number of requests with the HTTP method received so far, faulted or not.
func (p *Proxy) Requests(method string) int64 {
	if n, ok := p.byMethod.Load(method); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := p.byMethod.LoadOrStore(r.Method, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	if f := p.match(r); f != nil {
		p.injected.Add(1)
		if f.Delay > 0 {
			// Read the (small) body first: only then does the server notice a client that hangs up.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			t := time.NewTimer(f.Delay)
			select {
			case <-r.Context().Done():
				t.Stop()
				return // the client gave up; nothing was forwarded
			case <-t.C:
			}
			if f.Status == 0 && !f.ForwardThenDrop {
				p.served.Add(1)
				p.rp.ServeHTTP(w, r)
				return
			}
		}
		if f.ForwardThenDrop {
			p.served.Add(1)
			p.rp.ServeHTTP(httptest.NewRecorder(), r) // applied upstream; the answer goes nowhere
			p.drop(w)
			return
		}
		if f.Status == 0 {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			f.Status = http.StatusServiceUnavailable
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected fault","reason":%q,"code":%d}`, reason(f.Status), f.Status)
		return
	}
	p.served.Add(1)
	p.rp.ServeHTTP(w, r)
}

func (p *Proxy) match(r *http.Request) *Rule {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, ru := range p.rules {
		if ru.Method != "" && ru.Method != r.Method || !strings.Contains(r.URL.Path, ru.PathContains) || ru.Every <= 0 {
			continue
		}
		n := ru.seen.Add(1) - 1
		if n%int64(ru.Every) < int64(ru.Fail) && (ru.Limit == 0 || ru.injected.Load() < ru.Limit) {
			ru.injected.Add(1)
			out := ru.Rule
			return &out
		}
	}
	return nil
}

func reason(code int) string {
	switch code {
	case http.StatusTooManyRequests:
		return "TooManyRequests"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailable"
	case http.StatusGatewayTimeout:
		return "Timeout"
	default:
		return "InternalError"
	}
}
