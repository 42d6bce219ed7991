package alicloud

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Schemes accepted in Config.Scheme.
const (
	// SchemeHTTPS is the default scheme.
	SchemeHTTPS = "HTTPS"
	// SchemeHTTP sends signatures and data in clear text: only for loopback endpoints (the local
	// stack, tests), and only when set explicitly.
	SchemeHTTP = "HTTP"
)

// DefaultCallTimeout bounds one HTTP call when Config.CallTimeout is zero.
const DefaultCallTimeout = 10 * time.Second

// Product is an Alibaba Cloud service's name and endpoint patterns ("%s" is the region).
type Product struct {
	// Name names the service in errors and the user agent, e.g. "kms".
	Name string
	// PublicHost is the public endpoint pattern, e.g. "kms.%s.aliyuncs.com".
	PublicHost string
	// VPCHost is the VPC endpoint pattern, e.g. "kms-vpc.%s.aliyuncs.com".
	VPCHost string
}

// The products rekey calls.
var (
	// KMS is Key Management Service (RPC, 2016-01-20).
	KMS = Product{Name: "kms", PublicHost: "kms.%s.aliyuncs.com", VPCHost: "kms-vpc.%s.aliyuncs.com"}
	// ActionTrail is ActionTrail (RPC, 2020-07-06).
	ActionTrail = Product{Name: "actiontrail", PublicHost: "actiontrail.%s.aliyuncs.com", VPCHost: "actiontrail-vpc.%s.aliyuncs.com"}
	// CS is Container Service for Kubernetes (ROA, 2015-12-15).
	CS = Product{Name: "cs", PublicHost: "cs.%s.aliyuncs.com", VPCHost: "cs-anony-vpc.%s.aliyuncs.com"}
)

// Config configures a Client. Product, Region and Credentials are required.
type Config struct {
	// Product is the service called.
	Product Product
	// Region is the region ID, e.g. "cn-hangzhou".
	Region string
	// Endpoint is the service's host[:port]. Empty means the region's VPC endpoint, or the public
	// one when PublicEndpoint is set.
	Endpoint string
	// PublicEndpoint picks the public endpoint instead of the VPC one when Endpoint is empty. The
	// zero value (VPC) suits code running inside Alibaba Cloud.
	PublicEndpoint bool
	// Scheme is SchemeHTTPS (the default) or SchemeHTTP, which is accepted only for a loopback
	// Endpoint (127.0.0.0/8, ::1, localhost).
	Scheme string
	// Credentials sign every request; they are retrieved once per call.
	Credentials Provider
	// CallTimeout bounds one call: credentials, connect, request and response (default
	// DefaultCallTimeout). A shorter deadline on the caller's context wins.
	CallTimeout time.Duration
	// Transport carries the HTTP requests. Nil means a transport of the client's own that honours
	// HTTPS_PROXY/NO_PROXY; tests pass httptest's.
	Transport http.RoundTripper
	// UserAgent is appended to the SDK's user agent as "rekey/<UserAgent>" (ActionTrail records
	// it), e.g. "kms".
	UserAgent string
}

// regionPattern is what the SDK accepts as a region ID.
var regionPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Resolve validates c and fills in defaults: the endpoint, the scheme (upper case) and the call
// timeout. Errors start with the product name.
func (c Config) Resolve() (Config, error) {
	name := c.Product.Name
	if name == "" {
		return Config{}, errors.New("alicloud config: product is required")
	}
	c.Region = strings.TrimSpace(c.Region)
	if c.Region == "" {
		return Config{}, fmt.Errorf("%s config: region is required", name)
	}
	if !regionPattern.MatchString(c.Region) {
		return Config{}, fmt.Errorf("%s config: region %q is not a region ID like cn-hangzhou", name, c.Region)
	}
	if c.Credentials == nil {
		return Config{}, fmt.Errorf("%s config: credentials are required", name)
	}
	if static, ok := c.Credentials.(Credentials); ok {
		if err := static.Validate(); err != nil {
			return Config{}, fmt.Errorf("%s config: %w", name, err)
		}
	}
	switch strings.ToUpper(strings.TrimSpace(c.Scheme)) {
	case "", SchemeHTTPS:
		c.Scheme = SchemeHTTPS
	case SchemeHTTP:
		c.Scheme = SchemeHTTP
	default:
		return Config{}, fmt.Errorf("%s config: scheme %q: want HTTPS or HTTP", name, c.Scheme)
	}
	c.Endpoint = strings.TrimSpace(c.Endpoint)
	if c.Endpoint == "" {
		pattern := c.Product.VPCHost
		if c.PublicEndpoint || pattern == "" {
			pattern = c.Product.PublicHost
		}
		if pattern == "" {
			return Config{}, fmt.Errorf("%s config: the product has no default endpoint: set one", name)
		}
		c.Endpoint = fmt.Sprintf(pattern, c.Region)
	} else if err := validateEndpoint(c.Endpoint); err != nil {
		return Config{}, fmt.Errorf("%s config: %w", name, err)
	}
	if c.Scheme == SchemeHTTP && !IsLoopback(c.Endpoint) {
		return Config{}, fmt.Errorf("%s config: scheme HTTP with endpoint %s: plain HTTP is only allowed for a loopback endpoint "+
			"(127.0.0.0/8, ::1, localhost); use HTTPS", name, c.Endpoint)
	}
	if c.CallTimeout < 0 {
		return Config{}, fmt.Errorf("%s config: call timeout %v is negative", name, c.CallTimeout)
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	return c, nil
}

// IsLoopback reports whether endpoint (host or host:port) is a loopback address: 127.0.0.0/8,
// ::1 or the name localhost.
func IsLoopback(endpoint string) bool {
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateEndpoint accepts host or host:port, nothing else (no scheme, no path).
func validateEndpoint(ep string) error {
	if strings.Contains(ep, "://") || strings.ContainsAny(ep, "/?#@ ") {
		return fmt.Errorf("endpoint %q: want host[:port] without scheme or path (set the scheme separately)", ep)
	}
	host, _, err := splitEndpoint(ep)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("endpoint %q: host is empty", ep)
	}
	return nil
}

// splitEndpoint splits host[:port]; port is "" when there is none. An IPv6 host keeps no brackets
// only when it has no port.
func splitEndpoint(ep string) (host, port string, err error) {
	if !strings.Contains(ep, ":") {
		return ep, "", nil
	}
	if strings.HasPrefix(ep, "[") && strings.HasSuffix(ep, "]") {
		return ep, "", nil
	}
	h, p, err := net.SplitHostPort(ep)
	if err != nil {
		return "", "", fmt.Errorf("endpoint %q: want host[:port]: %w", ep, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("endpoint %q: port must be 1-65535", ep)
	}
	if strings.Contains(h, ":") {
		h = "[" + h + "]" // the SDK pastes the host into a URL
	}
	return h, p, nil
}
