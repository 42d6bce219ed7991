package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

func TestMain(m *testing.M) {
	// Tests talk to loopback only: the credentials chain must never reach the ECS metadata address.
	os.Setenv(alicloud.EnvECSMetadataDisabled, "true")
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var goodEnv = map[string]string{
	kms.EnvAccessKeyID:     "LTAIpluginTEST",
	kms.EnvAccessKeySecret: "plugin-secret-value",
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	good := []string{"--listen", "unix:///tmp/x.sock", "--key-id", "alias/k8s", "--region", "cn-hangzhou"}
	with := func(extra ...string) []string { return append(append([]string(nil), good...), extra...) }
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"no flags", nil, goodEnv, []string{"missing --listen, --key-id, --region (or $ALIBABA_CLOUD_REGION_ID)"}},
		{"no key id", []string{"--listen", "unix:///tmp/x.sock", "--region", "cn-hangzhou"}, goodEnv, []string{"missing --key-id"}},
		{"no credentials, ECS RAM role disabled", good, map[string]string{alicloud.EnvECSMetadataDisabled: "true"},
			[]string{kms.EnvAccessKeyID, kms.EnvAccessKeySecret, alicloud.EnvRoleARN}},
		{"half an access key", good, map[string]string{kms.EnvAccessKeyID: "LTAIx"}, []string{kms.EnvAccessKeySecret}},
		{"half of RRSA", good, map[string]string{alicloud.EnvRoleARN: "acs:ram::1:role/r"},
			[]string{alicloud.EnvOIDCProviderARN, alicloud.EnvOIDCTokenFile}},
		{"negative grace period", with("--health-grace-period", "-1s"), goodEnv, []string{"--health-grace-period"}},
		{"plain HTTP to a remote endpoint", with("--scheme", "HTTP", "--endpoint", "kms.example.com"), goodEnv,
			[]string{"scheme HTTP with endpoint kms.example.com", "loopback"}},
		{"sts without token", good, map[string]string{kms.EnvAccessKeyID: "STS.x", kms.EnvAccessKeySecret: "plugin-secret-value"},
			[]string{kms.EnvSecurityToken}},
		{"tcp listen", []string{"--listen", "tcp://127.0.0.1:1", "--key-id", "k", "--region", "cn-hangzhou"}, goodEnv,
			[]string{"--listen", "unsupported scheme"}},
		{"unknown flag", with("--bogus"), goodEnv, []string{"flag provided but not defined: -bogus", "see --help"}},
		{"stray argument", with("extra"), goodEnv, []string{"unexpected arguments"}},
		{"bad scheme", with("--scheme", "ftp"), goodEnv, []string{`--scheme "ftp"`}},
		{"bad log level", with("--log-level", "loud"), goodEnv, []string{`--log-level "loud"`}},
		{"zero timeout", with("--timeout", "0s"), goodEnv, []string{"--timeout must be positive"}},
		{"tiny interval", with("--status-interval", "10ms"), goodEnv, []string{"--status-interval"}},
		{"endpoint with scheme", with("--endpoint", "https://kms.cn-hangzhou.aliyuncs.com"), goodEnv,
			[]string{"without scheme or path"}},
		{"sdk debug output", good, map[string]string{kms.EnvAccessKeyID: "LTAIx", kms.EnvAccessKeySecret: "plugin-secret-value",
			"DEBUG": "tea,sdk"}, []string{`DEBUG contains "sdk"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(context.Background(), tt.args, envOf(tt.env), &stderr)
			out := stderr.String()
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitUsage, out)
			}
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "rekey-kms-plugin: ") {
				t.Fatalf("want one line starting with the program name, got:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Fatalf("stderr %q does not contain %q", out, w)
				}
			}
			if strings.Contains(out, "plugin-secret-value") {
				t.Fatalf("stderr shows the secret: %s", out)
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, envOf(nil), &stderr); code != exitOK {
		t.Fatalf("--help exit code %d", code)
	}
	for _, f := range []string{"-listen", "-key-id", "-region", "-endpoint", "-vpc", "-scheme", "-timeout", "-status-interval",
		"-health-grace-period", "-log-level", "ALIBABA_CLOUD_OIDC_TOKEN_FILE"} {
		if !strings.Contains(stderr.String(), f) {
			t.Fatalf("usage lacks %s:\n%s", f, stderr.String())
		}
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, err := parse([]string{"--listen", "unix:///run/kms.sock", "--key-id", "alias/k8s"},
		envOf(map[string]string{envRegion: "cn-shanghai", kms.EnvAccessKeyID: "LTAIa", kms.EnvAccessKeySecret: "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.socket != "/run/kms.sock" || cfg.kms.Region != "cn-shanghai" || cfg.kms.PublicEndpoint || cfg.kms.Endpoint != "" ||
		cfg.kms.Scheme != kms.SchemeHTTPS || cfg.kms.CallTimeout != kms.DefaultCallTimeout || cfg.statusInterval != 10*time.Second ||
		cfg.grace != kmsplugin.DefaultHealthGracePeriod || cfg.kms.Credentials.Source() != alicloud.SourceEnvAccessKey {
		t.Fatalf("defaults: %+v", cfg)
	}
	c, err := kms.NewSDKClient(cfg.kms)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Endpoint() != "kms-vpc.cn-shanghai.aliyuncs.com" || c.Scheme() != "HTTPS" {
		t.Fatalf("default endpoint %s://%s, want the VPC endpoint over HTTPS", c.Scheme(), c.Endpoint())
	}
	cfg, err = parse([]string{"--listen", "unix:///run/kms.sock", "--key-id", "k", "--region", "cn-beijing", "--vpc=false"},
		envOf(map[string]string{kms.EnvAccessKeyID: "LTAIa", kms.EnvAccessKeySecret: "s3cret"}))
	if err != nil || !cfg.kms.PublicEndpoint || cfg.kms.Region != "cn-beijing" {
		t.Fatalf("--vpc=false: %+v, %v", cfg.kms, err)
	}
}

func TestParseCredentialsChain(t *testing.T) {
	// parse only selects a source; nothing here asks the metadata service.
	t.Setenv(alicloud.EnvECSMetadataDisabled, "")
	args := []string{"--listen", "unix:///run/kms.sock", "--key-id", "k", "--region", "cn-hangzhou"}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{kms.EnvAccessKeyID: "LTAIa", kms.EnvAccessKeySecret: "s3cret"}, alicloud.SourceEnvAccessKey},
		{map[string]string{kms.EnvAccessKeyID: "STS.a", kms.EnvAccessKeySecret: "s3cret", kms.EnvSecurityToken: "t"}, alicloud.SourceEnvSTSToken},
		{map[string]string{alicloud.EnvRoleARN: "acs:ram::1:role/r", alicloud.EnvOIDCProviderARN: "acs:ram::1:oidc-provider/p",
			alicloud.EnvOIDCTokenFile: "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token"}, alicloud.SourceOIDC},
		{map[string]string{}, alicloud.SourceECSRAMRole},
	} {
		cfg, err := parse(args, envOf(tc.env))
		if err != nil {
			t.Fatalf("parse with %v: %v", tc.env, err)
		}
		if got := cfg.kms.Credentials.Source(); got != tc.want {
			t.Fatalf("credentials source with %v = %q, want %q", tc.env, got, tc.want)
		}
	}
	cfg, err := parse(append(args, "--health-grace-period", "0"), envOf(goodEnv))
	if err != nil || cfg.grace >= 0 {
		t.Fatalf("--health-grace-period 0: grace %v, %v; want none (negative)", cfg.grace, err)
	}
}

// syncBuffer is stderr shared with the running plugin.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunServesUntilCancelled(t *testing.T) {
	dev := kmsapi.DevCredential()
	srv, err := kmsapi.NewServer(kmsapi.Options{Credentials: []kmsapi.Credential{dev}})
	if err != nil {
		t.Fatal(err)
	}
	keyID, _, err := srv.EnsureKey("alias/k8s-secrets")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "kms.sock")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "unix://" + sock, "--key-id", "alias/k8s-secrets",
			"--endpoint", strings.TrimPrefix(ts.URL, "http://"), "--scheme", "HTTP", "--log-level", "debug"},
			envOf(map[string]string{envRegion: kmsapi.DefaultRegion, kms.EnvAccessKeyID: dev.AccessKeyID,
				kms.EnvAccessKeySecret: dev.AccessKeySecret}), &stderr)
	}()

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := kmsv2.NewKeyManagementServiceClient(conn)
	var st *kmsv2.StatusResponse
	deadline := time.Now().Add(20 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		st, err = client.Status(cctx, &kmsv2.StatusRequest{})
		ccancel()
		if err == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("run exited with %d before serving:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin never answered Status: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	md := describe(t, ts.URL, keyID)
	if st.Healthz != "ok" || st.KeyId != md {
		t.Fatalf("Status = %+v, want ok and %s", st, md)
	}
	enc, err := client.Encrypt(ctx, &kmsv2.EncryptRequest{Plaintext: []byte("0123456789abcdef0123456789abcdef"), Uid: "u1"})
	if err != nil || enc.KeyId != md {
		t.Fatalf("Encrypt = %v, %v", enc, err)
	}

	cancel() // what SIGTERM does through signal.NotifyContext
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit code after cancel = %d, want 0\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	logs := stderr.String()
	for _, w := range []string{`"message":"starting"`, `"message":"kms v2 plugin serving"`, `"message":"kms v2 plugin stopped"`} {
		if !strings.Contains(logs, w) {
			t.Fatalf("logs lack %s:\n%s", w, logs)
		}
	}
	for _, secret := range []string{dev.AccessKeySecret, dev.AccessKeyID, keyID, md} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain %q:\n%s", secret, logs)
		}
	}
}

// describe returns the key's primary version through a separate client.
func describe(t *testing.T, url, keyID string) string {
	t.Helper()
	dev := kmsapi.DevCredential()
	c, err := kms.NewSDKClient(kms.Config{Region: kmsapi.DefaultRegion, Endpoint: strings.TrimPrefix(url, "http://"), Scheme: kms.SchemeHTTP,
		Credentials: kms.Credentials{AccessKeyID: dev.AccessKeyID, AccessKeySecret: dev.AccessKeySecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	md, err := c.DescribeKey(context.Background(), keyID)
	if err != nil {
		t.Fatal(err)
	}
	return md.PrimaryKeyVersion
}
