package kms

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var testCreds = Credentials{AccessKeyID: "LTAIconfigtest", AccessKeySecret: "config-secret"}

func TestConfigResolve(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		wantEndpoint string
		wantScheme   string
		wantErr      string
	}{
		{"defaults: VPC endpoint over HTTPS", Config{Region: "cn-hangzhou", Credentials: testCreds},
			"kms-vpc.cn-hangzhou.aliyuncs.com", "HTTPS", ""},
		{"public endpoint", Config{Region: "cn-beijing", PublicEndpoint: true, Credentials: testCreds},
			"kms.cn-beijing.aliyuncs.com", "HTTPS", ""},
		{"explicit endpoint wins", Config{Region: "cn-hangzhou", Endpoint: "127.0.0.1:8443", Credentials: testCreds},
			"127.0.0.1:8443", "HTTPS", ""},
		{"explicit HTTP to loopback, any case", Config{Region: "cn-hangzhou", Endpoint: "localhost:8080", Scheme: "http", Credentials: testCreds},
			"localhost:8080", "HTTP", ""},
		{"HTTP to a remote host", Config{Region: "cn-hangzhou", Endpoint: "kms.local", Scheme: "http", Credentials: testCreds},
			"", "", "scheme HTTP with endpoint kms.local"},
		{"HTTP to the default endpoint", Config{Region: "cn-hangzhou", Scheme: "HTTP", Credentials: testCreds},
			"", "", "kms-vpc.cn-hangzhou.aliyuncs.com"},
		{"missing credentials", Config{Region: "cn-hangzhou"}, "", "", "credentials are required"},
		{"ipv6 endpoint", Config{Region: "cn-hangzhou", Endpoint: "[::1]:9000", Credentials: testCreds},
			"[::1]:9000", "HTTPS", ""},
		{"missing region", Config{Credentials: testCreds}, "", "", "region is required"},
		{"bad region", Config{Region: "cn hangzhou", Credentials: testCreds}, "", "", "not a region ID"},
		{"bad scheme", Config{Region: "cn-hangzhou", Scheme: "ftp", Credentials: testCreds}, "", "", `scheme "ftp"`},
		{"endpoint with scheme", Config{Region: "cn-hangzhou", Endpoint: "https://kms.cn-hangzhou.aliyuncs.com", Credentials: testCreds},
			"", "", "without scheme or path"},
		{"endpoint with path", Config{Region: "cn-hangzhou", Endpoint: "kms.example.com/x", Credentials: testCreds},
			"", "", "without scheme or path"},
		{"endpoint with bad port", Config{Region: "cn-hangzhou", Endpoint: "kms.example.com:0", Credentials: testCreds},
			"", "", "port must be"},
		{"missing secret", Config{Region: "cn-hangzhou", Credentials: Credentials{AccessKeyID: "LTAIx"}}, "", "", "secret is empty"},
		{"sts without token", Config{Region: "cn-hangzhou", Credentials: Credentials{AccessKeyID: "STS.x", AccessKeySecret: "s"}},
			"", "", "security token"},
		{"negative timeout", Config{Region: "cn-hangzhou", Credentials: testCreds, CallTimeout: -time.Second}, "", "", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolve() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolve(): %v", err)
			}
			if got.Endpoint != tt.wantEndpoint || got.Scheme != tt.wantScheme {
				t.Fatalf("resolve() = %s://%s, want %s://%s", got.Scheme, got.Endpoint, tt.wantScheme, tt.wantEndpoint)
			}
		})
	}
}

func TestConfigResolveDefaults(t *testing.T) {
	got, err := Config{Region: "cn-hangzhou", Credentials: testCreds}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultRetryPolicy()
	if got.CallTimeout != DefaultCallTimeout || got.Retry.MaxAttempts != d.MaxAttempts ||
		got.Retry.InitialInterval != d.InitialInterval || got.Retry.MaxInterval != d.MaxInterval ||
		got.Retry.MaxRetryAfter != d.MaxRetryAfter {
		t.Fatalf("defaults: timeout %v, retry %+v", got.CallTimeout, got.Retry)
	}
	c, err := NewSDKClient(Config{Region: "cn-hangzhou", Credentials: testCreds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Endpoint() != "kms-vpc.cn-hangzhou.aliyuncs.com" || c.Scheme() != SchemeHTTPS {
		t.Fatalf("NewSDKClient defaults: %s://%s", c.Scheme(), c.Endpoint())
	}
}

func TestCredentialsFromLookup(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Credentials
		wantErr []string
	}{
		{"access key", map[string]string{EnvAccessKeyID: "LTAIa", EnvAccessKeySecret: "env-secret-value"},
			Credentials{AccessKeyID: "LTAIa", AccessKeySecret: "env-secret-value"}, nil},
		{"sts token, trimmed", map[string]string{EnvAccessKeyID: " STS.a\n", EnvAccessKeySecret: "env-secret-value", EnvSecurityToken: "tok\n"},
			Credentials{AccessKeyID: "STS.a", AccessKeySecret: "env-secret-value", SecurityToken: "tok"}, nil},
		{"nothing set", map[string]string{}, Credentials{}, []string{EnvAccessKeyID, EnvAccessKeySecret}},
		{"missing id", map[string]string{EnvAccessKeySecret: "env-secret-value"}, Credentials{}, []string{EnvAccessKeyID}},
		{"missing secret", map[string]string{EnvAccessKeyID: "LTAIa"}, Credentials{}, []string{EnvAccessKeySecret}},
		{"sts without token", map[string]string{EnvAccessKeyID: "STS.a", EnvAccessKeySecret: "env-secret-value"}, Credentials{},
			[]string{EnvSecurityToken}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CredentialsFromLookup(func(k string) string { return tt.env[k] })
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not name %s", err, w)
					}
				}
				if v := tt.env[EnvAccessKeySecret]; v != "" && strings.Contains(err.Error(), v) {
					t.Fatalf("error %q shows the secret", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestCredentialsFromEnv(t *testing.T) {
	t.Setenv(EnvAccessKeyID, "LTAIenv")
	t.Setenv(EnvAccessKeySecret, "")
	t.Setenv(EnvSecurityToken, "")
	if _, err := CredentialsFromEnv(); err == nil || !strings.Contains(err.Error(), EnvAccessKeySecret) {
		t.Fatalf("CredentialsFromEnv() error = %v, want one naming %s", err, EnvAccessKeySecret)
	}
	t.Setenv(EnvAccessKeySecret, "env-secret")
	if c, err := CredentialsFromEnv(); err != nil || c.AccessKeyID != "LTAIenv" || c.AccessKeySecret != "env-secret" {
		t.Fatalf("CredentialsFromEnv() = %v, %v", c, err)
	}
}

func TestCredentialsNeverFormatSecrets(t *testing.T) {
	c := Credentials{AccessKeyID: "LTAI5tFullAccessKeyID", AccessKeySecret: "very-secret", SecurityToken: "token-value"}
	cfg := Config{Region: "cn-hangzhou", Credentials: c}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg)} {
		for _, secret := range []string{c.AccessKeyID, c.AccessKeySecret, c.SecurityToken} {
			if strings.Contains(s, secret) {
				t.Fatalf("%q shows %q", s, secret)
			}
		}
	}
}
