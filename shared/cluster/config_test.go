package cluster

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {server: "https://one.example:6443", insecure-skip-tls-verify: false}
- name: two
  cluster: {server: "https://two.example:6443"}
users:
- name: u
  user: {token: "tok"}
contexts:
- name: first
  context: {cluster: one, user: u}
- name: second
  context: {cluster: two, user: u}
current-context: first
`

func writeKubeconfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// isolate makes sure nothing of the machine's own configuration is found.
func isolate(t *testing.T) {
	t.Helper()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
}

func TestLoadExplicitKubeconfigAndContext(t *testing.T) {
	isolate(t)
	path := writeKubeconfig(t, kubeconfig)
	cfg, err := Load(Connection{Kubeconfig: path})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://one.example:6443" || cfg.BearerToken != "tok" || cfg.Insecure {
		t.Fatalf("current context: host %q token set %v insecure %v", cfg.Host, cfg.BearerToken != "", cfg.Insecure)
	}
	cfg, err = Load(Connection{Kubeconfig: path, Context: "second"})
	if err != nil || cfg.Host != "https://two.example:6443" {
		t.Fatalf("--context second: %v %v", cfg, err)
	}
	var ce *ConfigError
	if _, err := Load(Connection{Kubeconfig: path, Context: "nope"}); !errors.As(err, &ce) {
		t.Fatalf("unknown context: err = %v, want a ConfigError", err)
	}
}

func TestLoadFromKUBECONFIG(t *testing.T) {
	isolate(t)
	t.Setenv("KUBECONFIG", writeKubeconfig(t, kubeconfig))
	cfg, err := Load(Connection{})
	if err != nil || cfg.Host != "https://one.example:6443" {
		t.Fatalf("$KUBECONFIG: %v %v", cfg, err)
	}
}

func TestLoadErrorsAreConfigErrors(t *testing.T) {
	isolate(t)
	missing := filepath.Join(t.TempDir(), "absent")
	for name, c := range map[string]struct {
		conn Connection
		want string
	}{
		"missing file": {Connection{Kubeconfig: missing}, missing},
		"garbage":      {Connection{Kubeconfig: writeKubeconfig(t, "this: [is not")}, "load kubeconfig"},
		"nothing":      {Connection{}, "no kubeconfig found"},
	} {
		_, err := Load(c.conn)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want a ConfigError mentioning %q", name, err, c.want)
		}
		if ce != nil && ce.Unwrap() == nil {
			t.Errorf("%s: ConfigError without a cause", name)
		}
	}
}

type wrapped struct{ http.RoundTripper }

func TestLoadRateLimitsUserAgentAndTransport(t *testing.T) {
	isolate(t)
	path := writeKubeconfig(t, kubeconfig)
	cfg, err := Load(Connection{Kubeconfig: path})
	if err != nil || cfg.QPS >= 0 {
		t.Fatalf("QPS 0: got QPS %v (%v), want a negative QPS (no client-side limit)", cfg.QPS, err)
	}
	for _, c := range []struct {
		qps       float32
		burst     int
		wantBurst int
	}{{50, 10, 50}, {50, 100, 100}} {
		cfg, err := Load(Connection{Kubeconfig: path, QPS: c.qps, Burst: c.burst})
		if err != nil || cfg.QPS != c.qps || cfg.Burst != c.wantBurst {
			t.Fatalf("QPS %v burst %d: got %v/%d (%v), want burst %d", c.qps, c.burst, cfg.QPS, cfg.Burst, err, c.wantBurst)
		}
	}
	cfg, err = Load(Connection{Kubeconfig: path, UserAgent: "rekey/test", WrapTransport: func(rt http.RoundTripper) http.RoundTripper { return wrapped{rt} }})
	if err != nil || cfg.UserAgent != "rekey/test" || cfg.WrapTransport == nil {
		t.Fatalf("user agent %q wrap %v: %v", cfg.UserAgent, cfg.WrapTransport != nil, err)
	}
	if _, ok := cfg.WrapTransport(http.DefaultTransport).(wrapped); !ok {
		t.Fatal("WrapTransport was not installed")
	}
}
