package kms

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/retry"
)

// Environment variables CredentialsFromEnv reads. They are the ones Function Compute sets for a
// function's role and the ones the Alibaba Cloud CLI and SDKs read.
const (
	// EnvAccessKeyID holds the AccessKey ID.
	EnvAccessKeyID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
	// EnvAccessKeySecret holds the AccessKey secret.
	EnvAccessKeySecret = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
	// EnvSecurityToken holds the STS security token of an STS AccessKey (optional otherwise).
	EnvSecurityToken = "ALIBABA_CLOUD_SECURITY_TOKEN"
)

// Schemes accepted in Config.Scheme.
const (
	// SchemeHTTPS is the default scheme.
	SchemeHTTPS = "HTTPS"
	// SchemeHTTP sends credentials' signatures and data in clear text: only for the local stack and
	// tests, and only when set explicitly.
	SchemeHTTP = "HTTP"
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

// Credentials is an AccessKey pair, optionally an STS one with its SecurityToken. Its String and
// GoString never print the secret or the token.
type Credentials struct {
	// AccessKeyID identifies the AccessKey (an STS AccessKey ID starts with "STS.").
	AccessKeyID string
	// AccessKeySecret signs requests.
	AccessKeySecret string
	// SecurityToken accompanies an STS AccessKey; empty for a RAM user's or account's AccessKey.
	SecurityToken string
}

// String describes the credentials without revealing them.
func (c Credentials) String() string {
	kind := "access key"
	if c.SecurityToken != "" {
		kind = "sts token"
	}
	return fmt.Sprintf("Credentials{%s %s}", kind, Redact(c.AccessKeyID))
}

// GoString is String, so %#v does not print secrets either.
func (c Credentials) GoString() string { return c.String() }

// Validate reports missing parts.
func (c Credentials) Validate() error {
	switch {
	case c.AccessKeyID == "":
		return errors.New("credentials: access key ID is empty")
	case c.AccessKeySecret == "":
		return errors.New("credentials: access key secret is empty")
	case strings.HasPrefix(c.AccessKeyID, "STS.") && c.SecurityToken == "":
		return errors.New("credentials: an STS access key needs its security token")
	}
	return nil
}

// CredentialsFromEnv reads ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and the
// optional ALIBABA_CLOUD_SECURITY_TOKEN from the process environment.
func CredentialsFromEnv() (Credentials, error) {
	return CredentialsFromLookup(os.Getenv)
}

// CredentialsFromLookup is CredentialsFromEnv with the environment given as a function (tests and
// commands that take their environment as a parameter). The error names every missing variable.
func CredentialsFromLookup(getenv func(string) string) (Credentials, error) {
	c := Credentials{
		AccessKeyID:     strings.TrimSpace(getenv(EnvAccessKeyID)),
		AccessKeySecret: strings.TrimSpace(getenv(EnvAccessKeySecret)),
		SecurityToken:   strings.TrimSpace(getenv(EnvSecurityToken)),
	}
	var missing []string
	if c.AccessKeyID == "" {
		missing = append(missing, EnvAccessKeyID)
	}
	if c.AccessKeySecret == "" {
		missing = append(missing, EnvAccessKeySecret)
	}
	if strings.HasPrefix(c.AccessKeyID, "STS.") && c.SecurityToken == "" {
		missing = append(missing, EnvSecurityToken+" (required with an STS access key)")
	}
	switch len(missing) {
	case 0:
		return c, nil
	case 1:
		return Credentials{}, fmt.Errorf("kms credentials: environment variable %s is not set", missing[0])
	default:
		return Credentials{}, fmt.Errorf("kms credentials: environment variables %s are not set", strings.Join(missing, ", "))
	}
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
	// Scheme is SchemeHTTPS (the default) or SchemeHTTP, which must be set explicitly (local stack,
	// tests).
	Scheme string
	// Credentials sign every request.
	Credentials Credentials
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

// regionPattern is what the SDK accepts as a region ID.
var regionPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// resolve validates c and fills in defaults.
func (c Config) resolve() (Config, error) {
	c.Region = strings.TrimSpace(c.Region)
	if c.Region == "" {
		return Config{}, errors.New("kms config: region is required")
	}
	if !regionPattern.MatchString(c.Region) {
		return Config{}, fmt.Errorf("kms config: region %q is not a region ID like cn-hangzhou", c.Region)
	}
	if err := c.Credentials.Validate(); err != nil {
		return Config{}, fmt.Errorf("kms config: %w", err)
	}
	switch strings.ToUpper(strings.TrimSpace(c.Scheme)) {
	case "":
		c.Scheme = DefaultScheme
	case SchemeHTTPS:
		c.Scheme = SchemeHTTPS
	case SchemeHTTP:
		c.Scheme = SchemeHTTP
	default:
		return Config{}, fmt.Errorf("kms config: scheme %q: want HTTPS or HTTP", c.Scheme)
	}
	c.Endpoint = strings.TrimSpace(c.Endpoint)
	if c.Endpoint == "" {
		if c.PublicEndpoint {
			c.Endpoint = "kms." + c.Region + ".aliyuncs.com"
		} else {
			c.Endpoint = "kms-vpc." + c.Region + ".aliyuncs.com"
		}
	} else if err := validateEndpoint(c.Endpoint); err != nil {
		return Config{}, fmt.Errorf("kms config: %w", err)
	}
	if c.CallTimeout < 0 {
		return Config{}, fmt.Errorf("kms config: call timeout %v is negative", c.CallTimeout)
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
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

// validateEndpoint accepts host or host:port, nothing else (no scheme, no path).
func validateEndpoint(ep string) error {
	if strings.Contains(ep, "://") || strings.ContainsAny(ep, "/?#@ ") {
		return fmt.Errorf("endpoint %q: want host[:port] without scheme or path (set the scheme separately)", ep)
	}
	host := ep
	if strings.Contains(ep, ":") {
		h, port, err := net.SplitHostPort(ep)
		if err != nil {
			return fmt.Errorf("endpoint %q: want host[:port]: %w", ep, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("endpoint %q: port must be 1-65535", ep)
		}
		host = h
	}
	if host == "" {
		return fmt.Errorf("endpoint %q: host is empty", ep)
	}
	return nil
}
