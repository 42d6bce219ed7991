package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/handler"
	"github.com/rekey-dev/rekey/shared/retry"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/status"
)

// fleetFlags choose the clusters and keys of `rekey status` and `rekey history` the way the
// functions do: REKEY_TARGETS (or --targets), REKEY_REGION, REKEY_ACCOUNT_ID, a kubeconfig per
// cluster from REKEY_KUBECONFIG_<CLUSTER> (or --kubeconfig CLUSTER=PATH) or else from CS
// DescribeClusterUserKubeconfig, and the Alibaba Cloud credentials chain.
type fleetFlags struct {
	targets, region, account string
	kubeconfigs              []string
	clusterTimeout           time.Duration
}

func (f *fleetFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.targets, "targets", "", "clusters and keys, CLUSTER=KEY[,CLUSTER=KEY...] (default $"+config.EnvTargets+")")
	fs.StringVar(&f.region, "region", "", "region of the clusters and keys (default $"+config.EnvRegion+")")
	fs.StringVar(&f.account, "account-id", "", "account that owns the keys (default $"+config.EnvAccountID+")")
	fs.StringArrayVar(&f.kubeconfigs, "kubeconfig", nil, "CLUSTER=PATH: the kubeconfig of a cluster (default $"+config.EnvKubeconfigPrefix+"<CLUSTER>, else CS DescribeClusterUserKubeconfig); repeatable")
	fs.DurationVar(&f.clusterTimeout, "cluster-timeout", 30*time.Second, "give up on a cluster that does not answer within this (its row shows the error)")
}

// fleet is what the flags and the environment open.
type fleet struct {
	cfg            config.Config
	deps           handler.Deps
	open           status.Opener
	clusterTimeout time.Duration
}

// load reads the configuration the functions would read, with the flags on top, and wires the KMS
// client and the cluster opener. Configuration errors are usage errors (exit 2).
func (f *fleetFlags) load() (*fleet, error) {
	over := map[string]string{}
	if f.targets != "" {
		over[config.EnvTargets] = f.targets
	}
	if f.region != "" {
		over[config.EnvRegion] = f.region
	}
	if f.account != "" {
		over[config.EnvAccountID] = f.account
	}
	for _, kv := range f.kubeconfigs {
		c, p, ok := strings.Cut(kv, "=")
		if !ok || c == "" || p == "" {
			return nil, usagef("--kubeconfig %q: want CLUSTER=PATH", kv)
		}
		over[config.KubeconfigVar(c)] = p
	}
	getenv := func(k string) string {
		if v, ok := over[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	cfg, err := config.Load(getenv, config.Own{})
	if err != nil {
		return nil, &usageError{fmt.Errorf("configuration (--targets, --region and --account-id set the variables below): %w", err)}
	}
	nop := zerolog.Nop()
	deps, err := handler.Wire(cfg, getenv, &nop)
	if err != nil {
		return nil, &usageError{fmt.Errorf("wire clients: %w", err)}
	}
	kc, ok := deps.Clusters.(handler.KubeClusters)
	if ok {
		// A status check must not wait minutes on a cluster that is down: two attempts per call.
		kc.StateOptions = append(kc.StateOptions, state.WithRetryPolicy(retry.Policy{MaxAttempts: 2, InitialInterval: 500 * time.Millisecond, MaxInterval: 2 * time.Second}))
		deps.Clusters = kc
	}
	open := func(ctx context.Context, id string) (*state.Store, error) {
		c, err := deps.Clusters.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		return c.Store, nil
	}
	return &fleet{cfg: cfg, deps: deps, open: open, clusterTimeout: f.clusterTimeout}, nil
}

// clusters returns the distinct clusters of the targets, in order.
func (fl *fleet) clusters() []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range fl.cfg.Targets {
		if !seen[t.Cluster] {
			seen[t.Cluster] = true
			out = append(out, t.Cluster)
		}
	}
	return out
}
