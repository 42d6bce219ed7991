package kubeaccess_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/kubeaccess"
)

// FuzzCSResponse feeds arbitrary DescribeClusterUserKubeconfig answers (the kubeconfig and its
// expiration, or a whole raw body) to a Source, and the same kubeconfig as a REKEY_KUBECONFIG_*
// file. Neither may panic. An accepted configuration from CS verifies TLS, talks HTTPS, runs no
// credential plugin, carries rekey's user agent and expires within the asked duration (and not
// after the answer's expiration); one from a file verifies TLS. No error may quote a credential
// of the kubeconfig (token, password, client key) or the kubeconfig itself.
func FuzzCSResponse(f *testing.F) {
	f.Add(kubeconfig(false), now.Add(30*time.Minute).Format(time.RFC3339), []byte(nil))
	f.Add(kubeconfig(true), "", []byte(nil))
	f.Add(strings.Replace(kubeconfig(false), "https://", "http://", 1), "", []byte(nil))
	f.Add(strings.Replace(kubeconfig(false), "token: the-bearer-token", "exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, interactiveMode: Never}", 1), "", []byte(nil))
	f.Add(strings.Replace(kubeconfig(false), "token: the-bearer-token", "auth-provider: {name: oidc, config: {id-token: tok-0123456789}}", 1), "", []byte(nil))
	f.Add(strings.Replace(kubeconfig(false), "token: the-bearer-token", "client-key-data: c2VjcmV0LWtleS1kYXRhLTAx\n    client-certificate-data: Y2VydA==", 1), "", []byte(nil))
	f.Add("", "", []byte(`{"config":"apiVersion: v1\nusers: [{name: u, user: {token: \"tok-012345678901\"`))
	f.Add("", "", []byte(`{"config": 42}`))
	f.Add("", "", []byte(`not json at all: token tok-012345678901`))
	f.Add("{", "not a time", []byte(nil))
	f.Add("  {*0tok-0000000000", "", []byte(nil)) // a YAML error quoting the document (an unknown anchor)

	// CS answers through a transport that hands back the input: no socket, so that every input
	// costs the same and nothing but the answer varies.
	var body atomic.Value // []byte: the answer of the next request
	transport := roundTripper(func(req *http.Request) (*http.Response, error) {
		b := body.Load().([]byte)
		return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(b)),
			ContentLength: int64(len(b)), Request: req}, nil
	})
	creds := alicloud.CredentialsFunc(func(context.Context) (alicloud.Credentials, error) {
		return alicloud.Credentials{AccessKeyID: cred.AccessKeyID, AccessKeySecret: cred.AccessKeySecret, SecurityToken: cred.SecurityToken}, nil
	})
	dir := f.TempDir()

	f.Fuzz(func(t *testing.T, config, expiration string, raw []byte) {
		b := raw
		if len(b) == 0 {
			var err error
			if b, err = json.Marshal(map[string]string{"config": config, "expiration": expiration}); err != nil {
				return // not an answer CS can give
			}
		}
		body.Store(b)
		secrets := kubeconfigSecrets(config)
		if len(raw) > 0 {
			var resp struct {
				Config string `json:"config"`
			}
			if json.Unmarshal(raw, &resp) == nil && resp.Config != "" {
				config = resp.Config
				secrets = append(kubeconfigSecrets(resp.Config), secretsIn(raw)...)
			} else {
				secrets = secretsIn(raw)
			}
		}
		if len(config) >= 16 {
			secrets = append(secrets, config)
		}

		clk := clocktesting.NewFakePassiveClock(now)
		src, err := kubeaccess.New(kubeaccess.Options{
			CS:    alicloud.Config{Region: "cn-hangzhou", Endpoint: "127.0.0.1:9", Scheme: alicloud.SchemeHTTP, Credentials: creds, Transport: transport},
			Clock: clk,
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := src.RESTConfig(context.Background(), clusterA)
		if err != nil {
			noSecretIn(t, "CS error", err.Error(), secrets)
		} else {
			checkAccepted(t, cfg)
			if u, err := url.Parse(cfg.Host); err != nil || u.Scheme != "https" {
				t.Fatalf("CS kubeconfig over plain HTTP accepted: host %q", cfg.Host)
			}
			if cfg.ExecProvider != nil || cfg.AuthProvider != nil {
				t.Fatalf("CS kubeconfig with a credential plugin accepted (exec %v, auth-provider %v)", cfg.ExecProvider != nil, cfg.AuthProvider != nil)
			}
			exp := src.Expires(clusterA)
			if exp.Before(now) || exp.After(now.Add(kubeaccess.DefaultDuration)) {
				t.Fatalf("expires %v: want within [%v, %v]", exp, now, now.Add(kubeaccess.DefaultDuration))
			}
			if at, perr := time.Parse(time.RFC3339, expiration); len(raw) == 0 && perr == nil && at.After(now) && exp.After(at) {
				t.Fatalf("expires %v, after the answer's expiration %v", exp, at)
			}
		}

		// The same document as a kubeconfig file of a self-managed cluster.
		path := filepath.Join(dir, "kubeconfig")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		fsrc, err := kubeaccess.New(kubeaccess.Options{Kubeconfigs: map[string]string{clusterB: path}})
		if err != nil {
			t.Fatal(err)
		}
		fcfg, err := fsrc.RESTConfig(context.Background(), clusterB)
		if err != nil {
			noSecretIn(t, "file error", err.Error(), secrets)
			return
		}
		checkAccepted(t, fcfg)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func checkAccepted(t *testing.T, cfg *rest.Config) {
	t.Helper()
	if cfg == nil || cfg.Insecure {
		t.Fatalf("accepted a configuration without TLS verification: %+v", cfg)
	}
	if cfg.UserAgent != kubeaccess.DefaultUserAgent {
		t.Fatalf("user agent %q", cfg.UserAgent)
	}
}

// kubeconfigSecrets returns the credentials a kubeconfig document holds, as far as client-go
// reads it, in the forms an error could quote.
func kubeconfigSecrets(doc string) []string {
	var out []string
	c, err := clientcmd.Load([]byte(doc))
	if err != nil {
		return secretsIn([]byte(doc))
	}
	for _, a := range c.AuthInfos {
		for _, s := range []string{a.Token, a.Password, string(a.ClientKeyData)} {
			if len(s) >= 8 {
				out = append(out, s, base64.StdEncoding.EncodeToString([]byte(s)))
			}
		}
		if a.AuthProvider != nil {
			for _, v := range a.AuthProvider.Config {
				if len(v) >= 8 {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// secretsIn finds the credential-like values of a document clientcmd cannot read: the value after
// "token" (the seeds' shape), so that a parse error quoting it is caught.
func secretsIn(doc []byte) []string {
	var out []string
	s := string(doc)
	for {
		i := strings.Index(s, "tok-")
		if i < 0 {
			return out
		}
		j := i + 4
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] >= 'a' && s[j] <= 'z') {
			j++
		}
		if j-i >= 12 {
			out = append(out, s[i:j])
		}
		s = s[j:]
	}
}

func noSecretIn(t *testing.T, what, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Fatalf("%s quotes a credential or the kubeconfig: %q", what, text)
		}
	}
}
