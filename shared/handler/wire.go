package handler

import (
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kubeaccess"
	"github.com/rekey-dev/rekey/shared/notify"
)

// Wire builds the Deps of production from a loaded configuration: KMS, ActionTrail and CS clients
// signed with the invocation's credentials from the FC context (falling back to the Alibaba Cloud
// credentials chain read through getenv), kubeconfigs from files or CS, the webhook sender and
// job.Run. It makes no call.
func Wire(cfg config.Config, getenv func(string) string, logger *zerolog.Logger) (Deps, error) {
	chain, err := alicloud.DefaultCredentials(alicloud.ChainOptions{Getenv: getenv})
	if err != nil {
		// The FC context still carries the role's credentials; without them calls fail with this.
		logger.Warn().Err(err).Msg("no fallback credentials: only the Function Compute context's are used")
		chain = nil
	}
	creds := Credentials(chain)
	k, err := kms.NewSDKClient(kms.Config{Region: cfg.Region, Endpoint: cfg.KMSEndpoint, Scheme: cfg.EndpointScheme, Credentials: creds})
	if err != nil {
		return Deps{}, fmt.Errorf("kms client: %w", err)
	}
	trail, err := actiontrail.NewSDKClient(actiontrail.Config{Region: cfg.Region, Endpoint: cfg.ActionTrailEndpoint, Scheme: cfg.EndpointScheme, Credentials: creds})
	if err != nil {
		return Deps{}, fmt.Errorf("actiontrail client: %w", err)
	}
	src, err := kubeaccess.New(kubeaccess.Options{
		Kubeconfigs: cfg.Kubeconfigs,
		CS:          alicloud.Config{Region: cfg.Region, Endpoint: cfg.CSEndpoint, Scheme: cfg.EndpointScheme, Credentials: creds},
	})
	if err != nil {
		return Deps{}, fmt.Errorf("kubeconfig source: %w", err)
	}
	clk := clock.RealClock{}
	return Deps{
		Config:   cfg,
		KMS:      k,
		Clusters: KubeClusters{Source: src},
		Notifier: notify.New(cfg.Webhook, *logger),
		Run:      JobRunner(cfg, k, trail, clk),
		Clock:    clk,
		Logger:   logger,
	}, nil
}

// FromEnv is what a function's main does before fc.Start: it logs to stdout as function (at
// REKEY_LOG_LEVEL, default info: a pass of 50,000 Secrets writes no line per object), loads
// the configuration from the process environment (FC_REGION and FC_ACCOUNT_ID give the function's
// own region and account) and wires the production dependencies. On error the main starts
// Failing(err), so that every invocation reports the configuration problem.
func FromEnv(function string) (Deps, *zerolog.Logger, error) {
	log := zerolog.New(os.Stdout).With().Timestamp().Str("function", function).Logger()
	cfg, err := config.Load(os.Getenv, config.Own{Region: os.Getenv("FC_REGION"), AccountID: os.Getenv("FC_ACCOUNT_ID")})
	if err != nil {
		log.Error().Err(err).Msg("the function cannot start: every invocation fails with this error")
		return Deps{}, &log, err
	}
	log = log.Level(cfg.LogLevel)
	deps, err := Wire(cfg, os.Getenv, &log)
	if err != nil {
		log.Error().Err(err).Msg("the function cannot start: every invocation fails with this error")
		return Deps{}, &log, err
	}
	log.Info().Stringer("config", cfg).Msg("configuration loaded")
	return deps, &log, nil
}
