package controlplane

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// KMSv1FeatureGate is the kube-apiserver flag without which a KMS v1 provider is rejected (KMS v1
// is deprecated and off by default since 1.29, but still served behind the gate).
const KMSv1FeatureGate = "--feature-gates=KMSv1=true"

// KMSv1 returns a KMS v1 provider named name that talks to the v1beta1 plugin at endpoint
// ("unix:///path/to/socket"). cacheSize is the API server's DEK cache size (0: its default, 1000);
// a zero timeout leaves kube-apiserver's default (3 s). Start the API server with
// KMSv1FeatureGate in Options.ExtraAPIServerFlags.
func KMSv1(name, endpoint string, cacheSize int, timeout time.Duration) Provider {
	return kmsV1Provider{name: name, endpoint: endpoint, cacheSize: cacheSize, timeout: timeout}
}

type kmsV1Provider struct {
	name      string
	endpoint  string
	cacheSize int
	timeout   time.Duration
}

func (p kmsV1Provider) providerYAML() (string, error) {
	switch {
	case p.name == "":
		return "", errors.New("kms v1: empty name")
	case strings.Contains(p.name, ":"):
		return "", fmt.Errorf("kms v1: name %q contains ':'", p.name)
	case !strings.HasPrefix(p.endpoint, "unix:///"):
		return "", fmt.Errorf("kms v1 %q: endpoint %q is not unix:///path", p.name, p.endpoint)
	case p.cacheSize < 0:
		return "", fmt.Errorf("kms v1 %q: negative cache size %d", p.name, p.cacheSize)
	case p.timeout < 0:
		return "", fmt.Errorf("kms v1 %q: negative timeout %v", p.name, p.timeout)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kms:\n  apiVersion: v1\n  name: %s\n  endpoint: %s\n", quote(p.name), quote(p.endpoint))
	if p.cacheSize > 0 {
		fmt.Fprintf(&b, "  cachesize: %d\n", p.cacheSize)
	}
	if p.timeout > 0 {
		fmt.Fprintf(&b, "  timeout: %s\n", p.timeout)
	}
	return b.String(), nil
}
