package kms

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Environment variables of static credentials (see alicloud.DefaultCredentials for the whole
// chain). They are the ones Function Compute sets for a function's role and the ones the Alibaba
// Cloud CLI and SDKs read.
const (
	// EnvAccessKeyID holds the AccessKey ID.
	EnvAccessKeyID = alicloud.EnvAccessKeyID
	// EnvAccessKeySecret holds the AccessKey secret.
	EnvAccessKeySecret = alicloud.EnvAccessKeySecret
	// EnvSecurityToken holds the STS security token of an STS AccessKey (optional otherwise).
	EnvSecurityToken = alicloud.EnvSecurityToken
)

// Schemes accepted in Config.Scheme.
const (
	// SchemeHTTPS is the default scheme.
	SchemeHTTPS = alicloud.SchemeHTTPS
	// SchemeHTTP sends signatures and data in clear text: only for loopback endpoints (the local
	// stack, tests), and only when set explicitly.
	SchemeHTTP = alicloud.SchemeHTTP
)

// Defaults applied to zero Config fields.
const (
	// DefaultCallTimeout bounds one KMS HTTP call.
	DefaultCallTimeout = 5 * time.Second
	// DefaultScheme is HTTPS: plain HTTP must be asked for.
	DefaultScheme = SchemeHTTPS
)

// DefaultRetryPolicy is the retry policy for KMS calls: 4 attempts, 100ms doubling to 2s, a
// server's Retry-After capped at 5s. KMS sits on the API server's request path (the KMS provider
// timeout is a few seconds), so retries are short.
func DefaultRetryPolicy() retry.Policy {
	return retry.Policy{InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second, MaxAttempts: 4,
		MaxRetryAfter: 5 * time.Second}
}

// Credentials is an AccessKey pair, optionally an STS one with its SecurityToken; as an
// alicloud.Provider it is static credentials. Its String and GoString never print the secret or
// the token.
type Credentials = alicloud.Credentials

// CredentialsFromEnv reads ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and the
// optional ALIBABA_CLOUD_SECURITY_TOKEN from the process environment.
func CredentialsFromEnv() (Credentials, error) {
	return CredentialsFromLookup(os.Getenv)
}

// CredentialsFromLookup is CredentialsFromEnv with the environment given as a function (tests and
// commands that take their environment as a parameter). The error names every missing variable.
func CredentialsFromLookup(getenv func(string) string) (Credentials, error) {
	c, err := alicloud.CredentialsFromLookup(getenv)
	if err != nil {
		return Credentials{}, fmt.Errorf("kms %w", err)
	}
	return c, nil
}

// Config configures an SDKClient. Region and Credentials are required.
type Config struct {
	// Region is the KMS region, e.g. "cn-hangzhou".
	Region string
	// Endpoint is the KMS host[:port]. Empty means kms-vpc.<Region>.aliyuncs.com, or
	// kms.<Region>.aliyuncs.com when PublicEndpoint is set.
	Endpoint string
	// PublicEndpoint picks the public endpoint instead of the VPC one when Endpoint is empty. The
	// zero value (VPC) suits code running inside Alibaba Cloud: Function Compute with a VPC config,
	// ECS nodes of a cluster.
	PublicEndpoint bool
	// Scheme is SchemeHTTPS (the default) or SchemeHTTP, which must be set explicitly and is
	// accepted only for a loopback Endpoint (local stack, tests).
	Scheme string
	// Credentials sign every request: static Credentials, an alicloud.CredentialsFunc, or the
	// chain from alicloud.DefaultCredentials (refreshed STS, RRSA, ECS RAM role).
	Credentials alicloud.Provider
	// CallTimeout bounds one HTTP call, retries excluded (default DefaultCallTimeout). A shorter
	// deadline on the caller's context wins.
	CallTimeout time.Duration
	// Retry bounds the retries of one operation. Zero fields take DefaultRetryPolicy's values.
	Retry retry.Policy
	// Transport carries the HTTP requests. Nil means a transport of this client's own that honours
	// the HTTPS_PROXY/NO_PROXY environment; tests pass httptest's.
	Transport http.RoundTripper
	// OnRetry, when set, is told about every retry (operation name, the sanitized error, the wait).
	// It must be safe for concurrent use.
	OnRetry func(op string, err error, wait time.Duration)
}

// sdkConfig is the alicloud configuration of c.
func (c Config) sdkConfig() alicloud.Config {
	timeout := c.CallTimeout
	if timeout == 0 {
		timeout = DefaultCallTimeout
	}
	return alicloud.Config{Product: alicloud.KMS, Region: c.Region, Endpoint: c.Endpoint, PublicEndpoint: c.PublicEndpoint,
		Scheme: c.Scheme, Credentials: c.Credentials, CallTimeout: timeout, Transport: c.Transport, UserAgent: "kms"}
}

// resolve validates c and fills in defaults.
func (c Config) resolve() (Config, error) {
	r, err := c.sdkConfig().Resolve()
	if err != nil {
		return Config{}, err
	}
	c.Region, c.Endpoint, c.Scheme, c.CallTimeout = r.Region, r.Endpoint, r.Scheme, r.CallTimeout
	d := DefaultRetryPolicy()
	if c.Retry.InitialInterval <= 0 {
		c.Retry.InitialInterval = d.InitialInterval
	}
	if c.Retry.MaxInterval <= 0 {
		c.Retry.MaxInterval = d.MaxInterval
	}
	if c.Retry.MaxAttempts <= 0 {
		c.Retry.MaxAttempts = d.MaxAttempts
	}
	if c.Retry.MaxRetryAfter <= 0 {
		c.Retry.MaxRetryAfter = d.MaxRetryAfter
	}
	return c, nil
}
