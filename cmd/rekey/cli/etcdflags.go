package cli

import (
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	etcd "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rekey-dev/rekey/shared/etcdscan"
)

// DefaultEtcdPrefix is the API server's default --etcd-prefix.
const DefaultEtcdPrefix = etcdscan.DefaultEtcdPrefix

// etcdFlags locate the cluster's etcd for the commands that read stored values directly (self-managed
// clusters): the verifier's storage layer and the adoption gate's etcd canary.
type etcdFlags struct {
	endpoints     []string
	cert, key, ca string
	prefix        string
}

func (f *etcdFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.endpoints, "etcd-endpoints", nil, "etcd client URLs (self-managed clusters: read stored values directly)")
	fs.StringVar(&f.cert, "etcd-cert", "", "etcd client certificate")
	fs.StringVar(&f.key, "etcd-key", "", "etcd client key")
	fs.StringVar(&f.ca, "etcd-ca", "", "etcd CA bundle")
	fs.StringVar(&f.prefix, "etcd-prefix", DefaultEtcdPrefix, "the API server's --etcd-prefix: resources are read under <prefix>/<resource>/")
}

// given reports whether etcd was named.
func (f *etcdFlags) given() bool { return len(f.endpoints) > 0 }

// validate checks the prefix; the endpoints are checked by client.
func (f *etcdFlags) validate() error {
	if !strings.HasPrefix(f.prefix, "/") || strings.HasSuffix(f.prefix, "/") && f.prefix != "/" {
		return usagef("--etcd-prefix must start with / and not end with / (the API server's --etcd-prefix, default %s), not %q", DefaultEtcdPrefix, f.prefix)
	}
	return nil
}

// client connects to etcd, or returns nil when no endpoint was given. The caller closes it.
func (f *etcdFlags) client() (*etcd.Client, error) {
	if !f.given() {
		return nil, nil
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	cfg := etcd.Config{Endpoints: f.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if f.cert != "" || f.key != "" || f.ca != "" {
		tlsInfo := transport.TLSInfo{CertFile: f.cert, KeyFile: f.key, TrustedCAFile: f.ca}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, usagef("etcd TLS: %v", err)
		}
		cfg.TLS = tc
	} else {
		for _, ep := range f.endpoints {
			if strings.HasPrefix(ep, "https://") {
				return nil, usagef("etcd endpoint %s is HTTPS: give --etcd-ca (and --etcd-cert/--etcd-key)", ep)
			}
		}
	}
	cli, err := etcd.New(cfg)
	if err != nil {
		return nil, usagef("connect to etcd: %v", err)
	}
	return cli, nil
}
