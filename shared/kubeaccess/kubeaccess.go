package kubeaccess

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/responses"
	sdkcs "github.com/aliyun/alibaba-cloud-sdk-go/services/cs"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/cluster"
	"github.com/rekey-dev/rekey/shared/config"
)

// Defaults of Options.
const (
	// DefaultDuration is how long a kubeconfig's credential from CS lives (TemporaryDurationMinutes).
	DefaultDuration = 60 * time.Minute
	// MinDuration and MaxDuration are the bounds CS accepts (15..4320 minutes).
	MinDuration = 15 * time.Minute
	MaxDuration = 4320 * time.Minute
	// DefaultRenewBefore: a cached configuration is replaced this long before its credential expires,
	// so that a run never starts with a credential about to die.
	DefaultRenewBefore = 20 * time.Minute
	// DefaultUserAgent identifies the functions in API server logs and audit events.
	DefaultUserAgent = "rekey-function"
)

// Options configure a Source.
type Options struct {
	// Kubeconfigs maps a cluster ID to a kubeconfig path (config.Config.Kubeconfigs).
	Kubeconfigs map[string]string
	// CS configures the Container Service client (its Product is set to alicloud.CS). Region and
	// Credentials are required unless every cluster has a kubeconfig file.
	CS alicloud.Config
	// Duration is the lifetime asked for a CS kubeconfig's credential (default DefaultDuration,
	// rounded up to whole minutes, MinDuration..MaxDuration).
	Duration time.Duration
	// RenewBefore is how long before expiry a cached CS configuration is fetched again (default
	// DefaultRenewBefore; less than Duration).
	RenewBefore time.Duration
	// Clock judges expiry (default the real clock).
	Clock clock.PassiveClock
	// UserAgent is set on every configuration (default DefaultUserAgent).
	UserAgent string
}

// Source hands out the rest.Config of each cluster. It is safe for concurrent use.
type Source struct {
	opts  Options
	cs    *alicloud.Client // nil when no CS client is configured
	mu    sync.Mutex
	cache map[string]entry
}

type entry struct {
	cfg *rest.Config
	// expires is zero for a kubeconfig file.
	expires time.Time
}

// New validates opts and returns a Source. It makes no call.
func New(opts Options) (*Source, error) {
	if opts.Duration == 0 {
		opts.Duration = DefaultDuration
	}
	opts.Duration = opts.Duration.Round(time.Minute)
	if opts.Duration < MinDuration || opts.Duration > MaxDuration {
		return nil, fmt.Errorf("kubeaccess: kubeconfig duration %s is outside %s..%s", opts.Duration, MinDuration, MaxDuration)
	}
	if opts.RenewBefore == 0 {
		opts.RenewBefore = min(DefaultRenewBefore, opts.Duration/3)
	}
	if opts.RenewBefore < 0 || opts.RenewBefore >= opts.Duration {
		return nil, fmt.Errorf("kubeaccess: renew-before %s must be within 0..%s", opts.RenewBefore, opts.Duration)
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultUserAgent
	}
	s := &Source{opts: opts, cache: map[string]entry{}}
	if opts.CS.Region != "" || opts.CS.Credentials != nil {
		c := opts.CS
		c.Product = alicloud.CS
		if c.UserAgent == "" {
			c.UserAgent = "kubeaccess"
		}
		cl, err := alicloud.New(c)
		if err != nil {
			return nil, fmt.Errorf("kubeaccess: %w", err)
		}
		s.cs = cl
	}
	return s, nil
}

// RESTConfig returns the configuration of cluster: from its kubeconfig file when it has one,
// otherwise from CS (cached until RenewBefore its expiry). The caller may modify the copy it gets.
func (s *Source) RESTConfig(ctx context.Context, clusterID string) (*rest.Config, error) {
	now := s.opts.Clock.Now()
	s.mu.Lock()
	e, ok := s.cache[clusterID]
	s.mu.Unlock()
	if ok && (e.expires.IsZero() || now.Before(e.expires.Add(-s.opts.RenewBefore))) {
		return rest.CopyConfig(e.cfg), nil
	}
	var err error
	if path, ok := s.opts.Kubeconfigs[clusterID]; ok && path != "" {
		e, err = s.fromFile(clusterID, path)
	} else {
		e, err = s.fromCS(ctx, clusterID, now)
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cache[clusterID] = e
	s.mu.Unlock()
	return rest.CopyConfig(e.cfg), nil
}

// Expires returns when the cached configuration of a cluster expires (zero: a kubeconfig file, or
// nothing cached).
func (s *Source) Expires(clusterID string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache[clusterID].expires
}

func (s *Source) fromFile(clusterID, path string) (entry, error) {
	// A configuration error: name the variable that points at the file, and the fix.
	name := config.KubeconfigVar(clusterID)
	cfg, err := cluster.Load(cluster.Connection{Kubeconfig: path, UserAgent: s.opts.UserAgent})
	if err != nil {
		// A parse error may quote the file (a token, a key): say only whether it is missing or
		// unreadable, or that it cannot be parsed.
		if _, serr := os.Stat(path); serr != nil {
			err = serr
		} else {
			err = errors.New("cannot be parsed as a kubeconfig (the parser's message is withheld: it may quote the file)")
		}
		return entry{}, fmt.Errorf("kubeconfig of cluster %s (%s=%s): %w; fix: point %s at a readable kubeconfig of that cluster, or unset it to get one from CS",
			clusterID, name, path, err, name)
	}
	if err := checkTLS(cfg); err != nil {
		return entry{}, fmt.Errorf("kubeconfig of cluster %s (%s=%s): %w; fix: give the kubeconfig the cluster's CA (certificate-authority-data)",
			clusterID, name, path, err)
	}
	return entry{cfg: cfg}, nil
}

// describeResponse is DescribeClusterUserKubeconfig's answer; the SDK's struct lacks expiration.
type describeResponse struct {
	*responses.BaseResponse
	Config     string `json:"config"`
	Expiration string `json:"expiration"`
}

func (s *Source) fromCS(ctx context.Context, clusterID string, now time.Time) (entry, error) {
	if s.cs == nil {
		return entry{}, fmt.Errorf("cluster %s has no kubeconfig file and no CS client is configured", clusterID)
	}
	req := sdkcs.CreateDescribeClusterUserKubeconfigRequest()
	req.ClusterId = clusterID
	req.PrivateIpAddress = requests.NewBoolean(true)
	// The SDK struct has no field for it; without it the credential lives for years.
	req.QueryParams["TemporaryDurationMinutes"] = strconv.Itoa(int(s.opts.Duration / time.Minute))
	resp := &describeResponse{BaseResponse: &responses.BaseResponse{}}
	if err := s.cs.Do(ctx, req, resp, clusterID); err != nil {
		return entry{}, fmt.Errorf("cs DescribeClusterUserKubeconfig of cluster %s: %w", clusterID, err)
	}
	if resp.Config == "" {
		return entry{}, fmt.Errorf("cs DescribeClusterUserKubeconfig of cluster %s: empty kubeconfig", clusterID)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(resp.Config))
	if err != nil {
		// The parse error may quote the document; keep only that it failed.
		return entry{}, fmt.Errorf("kubeconfig of cluster %s from cs: %w", clusterID, errors.New("cannot be parsed"))
	}
	if err := checkTLS(cfg); err != nil {
		return entry{}, fmt.Errorf("kubeconfig of cluster %s from cs: %w", clusterID, err)
	}
	if err := checkCS(cfg); err != nil {
		return entry{}, fmt.Errorf("kubeconfig of cluster %s from cs: %w", clusterID, err)
	}
	cfg.QPS = -1 // no client-side limit, as cluster.Load: the engine bounds its own concurrency
	cfg.UserAgent = s.opts.UserAgent
	expires := now.Add(s.opts.Duration)
	if resp.Expiration != "" {
		if t, err := time.Parse(time.RFC3339, resp.Expiration); err == nil && t.Before(expires) {
			// An expiration already past (a skewed clock, a forged answer) is not cached at all.
			expires = maxTime(t, now)
		}
	}
	return entry{cfg: cfg, expires: expires}, nil
}

// checkTLS refuses a configuration that does not verify the API server's certificate.
func checkTLS(cfg *rest.Config) error {
	if cfg.Insecure {
		return errors.New("it disables TLS verification (insecure-skip-tls-verify): refused")
	}
	return nil
}

// checkCS refuses what an ACK kubeconfig never holds and what would turn a forged or tampered CS
// answer into harm: a server reached over plain HTTP (the bearer token in clear) and a credential
// plugin (exec runs a command, auth-provider calls out).
func checkCS(cfg *rest.Config) error {
	if u, err := url.Parse(cfg.Host); err != nil || u.Scheme != "https" || u.Host == "" {
		return errors.New("its server is not an https:// URL: refused")
	}
	if cfg.ExecProvider != nil || cfg.AuthProvider != nil {
		return errors.New("it names a credential plugin (exec or auth-provider): refused")
	}
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
