package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ConfigError reports a kubeconfig that cannot be used. Callers map it to a usage/configuration
// exit code.
type ConfigError struct{ Err error }

// Error implements error.
func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// Connection tunes the REST client built from a kubeconfig.
type Connection struct {
	// Kubeconfig is a kubeconfig path; empty means $KUBECONFIG, then ~/.kube/config, then in-cluster.
	Kubeconfig string
	// Context selects a kubeconfig context; empty means the current one.
	Context string
	// QPS and Burst bound the client-side request rate; QPS <= 0 means no client-side limit.
	QPS   float32
	Burst int
	// UserAgent identifies rekey in API server logs and audit events.
	UserAgent string
	// WrapTransport, when set, wraps the HTTP transport (metrics, recording in tests).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Load builds a rest.Config the way kubectl resolves one. TLS verification follows the kubeconfig
// (rekey never turns it off by itself).
func Load(c Connection) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return nil, &ConfigError{fmt.Errorf("kubeconfig %s: %w", c.Kubeconfig, err)}
		}
		rules.ExplicitPath = c.Kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			err = errors.New("no kubeconfig found: pass --kubeconfig or set KUBECONFIG")
		}
		return nil, &ConfigError{fmt.Errorf("load kubeconfig: %w", err)}
	}
	if c.QPS <= 0 {
		cfg.QPS = -1 // client-go: a negative QPS disables the client-side rate limiter
	} else {
		cfg.QPS, cfg.Burst = c.QPS, max(c.Burst, int(c.QPS))
	}
	if c.UserAgent != "" {
		cfg.UserAgent = c.UserAgent
	}
	if c.WrapTransport != nil {
		cfg.Wrap(c.WrapTransport)
	}
	return cfg, nil
}
