package kubeaccess_test

import (
	"context"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/infra/local/cs"
	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/kubeaccess"
)

const (
	clusterA = "c0123456789abcdef0123456789abcdef"
	clusterB = "cself"
	// caData is not a real certificate: the configurations are parsed, never dialled.
	kubeconfigTmpl = `apiVersion: v1
kind: Config
clusters:
- name: k
  cluster:
    server: https://10.0.0.10:6443
    certificate-authority-data: Y2E=
    INSECURE
users:
- name: u
  user:
    token: the-bearer-token
contexts:
- name: c
  context: {cluster: k, user: u}
current-context: c
`
)

var (
	now  = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	cred = kmsapi.Credential{
		AccessKeyID: "STS.NTESTka0001", AccessKeySecret: "ka-sts-secret", SecurityToken: "CAIS-ka-token-0001",
		Expiration: now.Add(36 * time.Hour),
		Identity: kmsapi.Identity{Type: kmsapi.IdentityAssumedRole, AccountID: "5068000000000001",
			RoleName: "rekey-function", SessionName: "fc"},
	}
)

func kubeconfig(insecure bool) string {
	s := ""
	if insecure {
		s = "insecure-skip-tls-verify: true"
	}
	return strings.Replace(kubeconfigTmpl, "INSECURE", s, 1)
}

type env struct {
	srv   *cs.Server
	clock *clocktesting.FakePassiveClock
	opts  kubeaccess.Options
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(now)
	srv, err := cs.NewServer(cs.Options{Credentials: []kmsapi.Credential{cred}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(clusterA, kubeconfig(false)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	u, _ := url.Parse(ts.URL)
	// The function's per-invocation credentials, as functions/ pass them from the FC context.
	creds := alicloud.CredentialsFunc(func(context.Context) (alicloud.Credentials, error) {
		return alicloud.Credentials{AccessKeyID: cred.AccessKeyID, AccessKeySecret: cred.AccessKeySecret, SecurityToken: cred.SecurityToken}, nil
	})
	return &env{srv: srv, clock: clk, opts: kubeaccess.Options{
		CS:    alicloud.Config{Region: "cn-hangzhou", Endpoint: u.Host, Scheme: alicloud.SchemeHTTP, Credentials: creds},
		Clock: clk,
	}}
}

func TestRESTConfigFromCSIsShortLivedPrivateAndCached(t *testing.T) {
	e := newEnv(t)
	src, err := kubeaccess.New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg, err := src.RESTConfig(ctx, clusterA)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://10.0.0.10:6443" || cfg.BearerToken != "the-bearer-token" || cfg.Insecure || string(cfg.CAData) != "ca" {
		t.Fatalf("config: host %q insecure %v ca %q", cfg.Host, cfg.Insecure, cfg.CAData)
	}
	if cfg.UserAgent != kubeaccess.DefaultUserAgent || cfg.QPS >= 0 {
		t.Fatalf("user agent %q qps %v", cfg.UserAgent, cfg.QPS)
	}
	calls := e.srv.Calls()
	if len(calls) != 1 || !calls[0].PrivateIPAddress || calls[0].TemporaryDurationMinutes != 60 || calls[0].AccessKeyID != cred.AccessKeyID {
		t.Fatalf("calls = %+v", calls)
	}
	if got, want := src.Expires(clusterA), now.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("expires %v, want %v", got, want)
	}

	// Cached while far from expiry; the copy handed out may be changed freely.
	cfg.Host = "changed"
	e.clock.SetTime(now.Add(39 * time.Minute))
	again, err := src.RESTConfig(ctx, clusterA)
	if err != nil {
		t.Fatal(err)
	}
	if again.Host != "https://10.0.0.10:6443" || len(e.srv.Calls()) != 1 {
		t.Fatalf("host %q after %d calls: want the cached configuration", again.Host, len(e.srv.Calls()))
	}
	// Fetched again once within RenewBefore (20m) of expiry.
	e.clock.SetTime(now.Add(41 * time.Minute))
	if _, err := src.RESTConfig(ctx, clusterA); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Calls()); n != 2 {
		t.Fatalf("%d calls, want 2 (renewed)", n)
	}
}

func TestRESTConfigRefusesInsecureAndReportsCSErrors(t *testing.T) {
	e := newEnv(t)
	if err := e.srv.Register(clusterA, kubeconfig(true)); err != nil {
		t.Fatal(err)
	}
	src, err := kubeaccess.New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.RESTConfig(context.Background(), clusterA)
	if err == nil || !strings.Contains(err.Error(), "TLS verification") {
		t.Fatalf("insecure kubeconfig: err = %v", err)
	}
	_, err = src.RESTConfig(context.Background(), "cunknown")
	if err == nil || !strings.Contains(err.Error(), "DescribeClusterUserKubeconfig") {
		t.Fatalf("unknown cluster: err = %v", err)
	}
	for _, secret := range []string{cred.AccessKeySecret, cred.SecurityToken, "the-bearer-token"} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error leaks a secret: %v", err)
		}
	}
}

func TestRESTConfigFromFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig(false)), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "insecure")
	if err := os.WriteFile(bad, []byte(kubeconfig(true)), 0o600); err != nil {
		t.Fatal(err)
	}
	// No CS client at all: every cluster has a file.
	src, err := kubeaccess.New(kubeaccess.Options{Kubeconfigs: map[string]string{clusterB: path, "cbad": bad}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := src.RESTConfig(context.Background(), clusterB)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://10.0.0.10:6443" || !src.Expires(clusterB).IsZero() {
		t.Fatalf("host %q expires %v", cfg.Host, src.Expires(clusterB))
	}
	if _, err := src.RESTConfig(context.Background(), "cbad"); err == nil || !strings.Contains(err.Error(), "TLS verification") {
		t.Fatalf("insecure file: err = %v", err)
	}
	if _, err := src.RESTConfig(context.Background(), clusterA); err == nil || !strings.Contains(err.Error(), "no CS client") {
		t.Fatalf("cluster without file or CS: err = %v", err)
	}
}

func TestNewValidatesDuration(t *testing.T) {
	for _, d := range []time.Duration{time.Minute, 73 * time.Hour} {
		if _, err := kubeaccess.New(kubeaccess.Options{Duration: d}); err == nil {
			t.Fatalf("duration %s accepted", d)
		}
	}
}

// TestKubeconfigFileErrorsNameTheVariable: a kubeconfig file that cannot be used is a configuration
// error, and says which REKEY_KUBECONFIG_* variable to fix and how.
func TestKubeconfigFileErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "insecure")
	if err := os.WriteFile(bad, []byte(kubeconfig(true)), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := kubeaccess.New(kubeaccess.Options{Kubeconfigs: map[string]string{"c-missing": filepath.Join(dir, "nothing-here"), "c-insecure": bad}})
	if err != nil {
		t.Fatal(err)
	}
	for cluster, want := range map[string]string{"c-missing": "REKEY_KUBECONFIG_C_MISSING", "c-insecure": "REKEY_KUBECONFIG_C_INSECURE"} {
		_, err := src.RESTConfig(context.Background(), cluster)
		if err == nil || !strings.Contains(err.Error(), want+"=") || !strings.Contains(err.Error(), "fix: ") {
			t.Errorf("cluster %s: %v; want an error naming %s and the fix", cluster, err, want)
		}
	}
}
