package alicloud

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

// stsHandler serves the test STS; tests swap it.
var stsHandler atomic.Pointer[http.HandlerFunc]

// stsHost is the host:port of the test STS (HTTPS, certificate trusted through SSL_CERT_FILE).
var stsHost string

// TestMain starts a TLS STS stand-in and makes the process trust its certificate before anything
// loads the system roots: the SDK's OIDC provider always calls STS over HTTPS with a transport of
// its own.
func TestMain(m *testing.M) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := stsHandler.Load(); h != nil {
			(*h)(w, r)
			return
		}
		http.Error(w, `{"Code":"NoHandler"}`, http.StatusInternalServerError)
	}))
	dir, err := os.MkdirTemp("", "alicloud-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ca := filepath.Join(dir, "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(ca, cert, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("SSL_CERT_FILE", ca)
	os.Setenv("SSL_CERT_DIR", dir)
	stsHost = strings.TrimPrefix(ts.URL, "https://")

	code := m.Run()
	ts.Close()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
