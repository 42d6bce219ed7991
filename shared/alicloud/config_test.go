package alicloud

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
		{"kms: VPC endpoint over HTTPS", Config{Product: KMS, Region: "cn-hangzhou", Credentials: testCreds},
			"kms-vpc.cn-hangzhou.aliyuncs.com", "HTTPS", ""},
		{"kms: public endpoint", Config{Product: KMS, Region: "cn-beijing", PublicEndpoint: true, Credentials: testCreds},
			"kms.cn-beijing.aliyuncs.com", "HTTPS", ""},
		{"actiontrail: VPC endpoint", Config{Product: ActionTrail, Region: "cn-shanghai", Credentials: testCreds},
			"actiontrail-vpc.cn-shanghai.aliyuncs.com", "HTTPS", ""},
		{"actiontrail: public endpoint", Config{Product: ActionTrail, Region: "cn-shanghai", PublicEndpoint: true, Credentials: testCreds},
			"actiontrail.cn-shanghai.aliyuncs.com", "HTTPS", ""},
		{"cs: VPC endpoint", Config{Product: CS, Region: "cn-hangzhou", Credentials: testCreds},
			"cs-anony-vpc.cn-hangzhou.aliyuncs.com", "HTTPS", ""},
		{"product without VPC endpoint", Config{Product: Product{Name: "x", PublicHost: "x.%s.example"}, Region: "r1", Credentials: testCreds},
			"x.r1.example", "HTTPS", ""},
		{"explicit endpoint wins", Config{Product: KMS, Region: "cn-hangzhou", Endpoint: "kms.example.com:8443", Credentials: testCreds},
			"kms.example.com:8443", "HTTPS", ""},
		{"ipv6 endpoint", Config{Product: KMS, Region: "cn-hangzhou", Endpoint: "[fd00::1]:9000", Credentials: testCreds},
			"[fd00::1]:9000", "HTTPS", ""},
		{"function credentials", Config{Product: KMS, Region: "cn-hangzhou", Credentials: CredentialsFunc(nil)},
			"kms-vpc.cn-hangzhou.aliyuncs.com", "HTTPS", ""},
		{"missing product", Config{Region: "cn-hangzhou", Credentials: testCreds}, "", "", "product is required"},
		{"missing region", Config{Product: KMS, Credentials: testCreds}, "", "", "kms config: region is required"},
		{"bad region", Config{Product: KMS, Region: "cn hangzhou", Credentials: testCreds}, "", "", "not a region ID"},
		{"missing credentials", Config{Product: KMS, Region: "cn-hangzhou"}, "", "", "credentials are required"},
		{"incomplete static credentials", Config{Product: KMS, Region: "cn-hangzhou", Credentials: Credentials{AccessKeyID: "LTAIx"}},
			"", "", "secret is empty"},
		{"bad scheme", Config{Product: KMS, Region: "cn-hangzhou", Scheme: "ftp", Credentials: testCreds}, "", "", `scheme "ftp"`},
		{"endpoint with scheme", Config{Product: KMS, Region: "cn-hangzhou", Endpoint: "https://kms.cn-hangzhou.aliyuncs.com", Credentials: testCreds},
			"", "", "without scheme or path"},
		{"endpoint with bad port", Config{Product: KMS, Region: "cn-hangzhou", Endpoint: "kms.example.com:0", Credentials: testCreds},
			"", "", "port must be"},
		{"negative timeout", Config{Product: KMS, Region: "cn-hangzhou", Credentials: testCreds, CallTimeout: -time.Second}, "", "", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.Resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(): %v", err)
			}
			if got.Endpoint != tt.wantEndpoint || got.Scheme != tt.wantScheme || got.CallTimeout != DefaultCallTimeout {
				t.Fatalf("Resolve() = %s://%s (timeout %v), want %s://%s", got.Scheme, got.Endpoint, got.CallTimeout,
					tt.wantScheme, tt.wantEndpoint)
			}
		})
	}
}

func TestHTTPOnlyForLoopback(t *testing.T) {
	for ep, ok := range map[string]bool{
		"127.0.0.1:8080":   true,
		"127.9.8.7":        true,
		"[::1]:9000":       true,
		"localhost":        true,
		"LocalHost:80":     true,
		"":                 false, // the default (VPC) endpoint
		"10.0.0.1:8080":    false,
		"kms.local":        false,
		"128.0.0.1":        false,
		"127.0.0.1.nip.io": false,
		"[fd00::1]:9000":   false,
		"localhost.evil":   false,
	} {
		t.Run(ep, func(t *testing.T) {
			_, err := Config{Product: KMS, Region: "cn-hangzhou", Endpoint: ep, Scheme: "http", Credentials: testCreds}.Resolve()
			if ok && err != nil {
				t.Fatalf("HTTP to %q refused: %v", ep, err)
			}
			if !ok {
				want := ep
				if want == "" {
					want = "kms-vpc.cn-hangzhou.aliyuncs.com"
				}
				if err == nil || !strings.Contains(err.Error(), "endpoint "+want) || !strings.Contains(err.Error(), "loopback") {
					t.Fatalf("HTTP to %q: error = %v, want one naming the endpoint", ep, err)
				}
			}
		})
	}
}

func TestCredentialsNeverFormatSecrets(t *testing.T) {
	c := Credentials{AccessKeyID: "LTAI5tFullAccessKeyID", AccessKeySecret: "very-secret", SecurityToken: "token-value"}
	cfg := Config{Product: KMS, Region: "cn-hangzhou", Credentials: c}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", cfg),
		fmt.Sprintf("%+v", cfg), c.Source()} {
		for _, secret := range []string{c.AccessKeyID, c.AccessKeySecret, c.SecurityToken} {
			if strings.Contains(s, secret) {
				t.Fatalf("%q shows %q", s, secret)
			}
		}
	}
}
