// Command rekey-kms-plugin is a Kubernetes KMS v2 plugin backed by Alibaba Cloud KMS, for
// self-managed clusters on Alibaba Cloud. Point the API server's EncryptionConfiguration at it:
//
//	providers:
//	  - kms: {apiVersion: v2, name: alibaba-kms, endpoint: unix:///var/run/kmsplugin/kms.sock, timeout: 3s}
//	  - identity: {}
//
// and run it next to every API server:
//
//	rekey-kms-plugin --listen unix:///var/run/kmsplugin/kms.sock --key-id <key ID or alias/name> --region cn-hangzhou
//
// Credentials come from the Alibaba Cloud credentials chain (see alicloud.DefaultCredentials):
// ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (with ALIBABA_CLOUD_SECURITY_TOKEN
// for an STS token, which is not refreshed); else RRSA (ALIBABA_CLOUD_ROLE_ARN,
// ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE), refreshed; else the ECS
// instance's RAM role from the metadata service, refreshed. The RAM identity needs
// kms:DescribeKey, kms:Encrypt and kms:Decrypt on the key. Bad configuration exits with status 2,
// SIGTERM or SIGINT with 0 after a graceful stop, anything else with 1. See package
// shared/kmsplugin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/kms/pkg/util"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// envRegion is the region fallback when --region is not given.
const envRegion = "ALIBABA_CLOUD_REGION_ID"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// config is the parsed command line.
type config struct {
	socket         string
	keyID          string
	kms            kms.Config
	statusInterval time.Duration
	grace          time.Duration // ServiceOptions.HealthGracePeriod: negative for none
	logLevel       zerolog.Level
}

// run is the whole command: parse args and the environment (getenv), serve until ctx ends, and
// return the exit code. Problems are written to stderr: configuration problems as one line.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parse(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		usage(stderr)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "rekey-kms-plugin: %v\n", err)
		return exitUsage
	}
	log := zerolog.New(stderr).Level(cfg.logLevel).With().Timestamp().Str("component", "rekey-kms-plugin").Logger()
	cfg.kms.OnRetry = func(op string, err error, wait time.Duration) {
		log.Debug().Str("op", op).Err(err).Dur("wait", wait).Msg("retrying kms call")
	}
	client, err := kms.NewSDKClient(cfg.kms)
	if err != nil {
		fmt.Fprintf(stderr, "rekey-kms-plugin: %v\n", err)
		return exitUsage
	}
	defer client.Close()
	log.Info().Str("endpoint", client.Endpoint()).Str("scheme", client.Scheme()).Str("region", cfg.kms.Region).
		Str("credentials", client.CredentialsSource()).Msg("starting")
	if client.CredentialsSource() == alicloud.SourceEnvSTSToken {
		log.Warn().Msg("the STS token from the environment is never refreshed: the plugin fails once it expires; " +
			"prefer RRSA or the ECS RAM role")
	}

	err = kmsplugin.Run(ctx, kmsplugin.Options{
		SocketPath: cfg.socket,
		Client:     client,
		KeyID:      cfg.keyID,
		Timeout:    cfg.kms.CallTimeout,
		Service:    kmsplugin.ServiceOptions{StatusInterval: cfg.statusInterval, HealthGracePeriod: cfg.grace, Logger: &log},
	})
	if err != nil {
		log.Error().Err(err).Msg("stopped")
		return exitFailed
	}
	return exitOK
}

// flagValues are the command-line flags.
type flagValues struct {
	listen, keyID, region, endpoint, scheme, level *string
	vpc                                            *bool
	timeout, interval, grace                       *time.Duration
}

// newFlags defines the command's flags.
func newFlags() (*flag.FlagSet, flagValues) {
	fs := flag.NewFlagSet("rekey-kms-plugin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, flagValues{
		listen: fs.String("listen", "", "unix socket to serve on, e.g. unix:///var/run/kmsplugin/kms.sock (required)"),
		keyID:  fs.String("key-id", "", "KMS key ID, alias (alias/<name>) or ARN that encrypts new DEKs (required)"),
		region: fs.String("region", "", "KMS region, e.g. cn-hangzhou (default $"+envRegion+")"),
		endpoint: fs.String("endpoint", "", "KMS endpoint host[:port] (default kms-vpc.<region>.aliyuncs.com, "+
			"or kms.<region>.aliyuncs.com with --vpc=false)"),
		vpc:      fs.Bool("vpc", true, "use the VPC endpoint when --endpoint is not set"),
		scheme:   fs.String("scheme", kms.SchemeHTTPS, "HTTPS, or HTTP for a local KMS stand-in"),
		timeout:  fs.Duration("timeout", kms.DefaultCallTimeout, "timeout of one KMS call and of a gRPC connection handshake"),
		interval: fs.Duration("status-interval", kmsplugin.DefaultStatusInterval, "how often the key's state and primary version are refreshed"),
		grace: fs.Duration("health-grace-period", kmsplugin.DefaultHealthGracePeriod,
			"how long after the last successful KMS call healthz stays ok while KMS is unreachable (0: report at once)"),
		level: fs.String("log-level", "info", "debug, info, warn or error"),
	}
}

// parse reads the flags and the environment. Every problem found is reported in one error.
func parse(args []string, getenv func(string) string) (config, error) {
	fs, f := newFlags()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, fmt.Errorf("%w (see --help)", err)
	}

	var problems, missing []string
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	cfg := config{keyID: strings.TrimSpace(*f.keyID), statusInterval: *f.interval, grace: *f.grace}
	if cfg.grace == 0 {
		cfg.grace = -1 // ServiceOptions: negative is none, zero the default
	}
	if *f.listen == "" {
		missing = append(missing, "--listen")
	} else if p, err := util.ParseEndpoint(*f.listen); err != nil {
		problems = append(problems, fmt.Sprintf("--listen: %v", err))
	} else if p == "" {
		problems = append(problems, fmt.Sprintf("--listen %q names no socket path", *f.listen))
	} else {
		cfg.socket = p
	}
	if cfg.keyID == "" {
		missing = append(missing, "--key-id")
	}
	r := strings.TrimSpace(*f.region)
	if r == "" {
		r = strings.TrimSpace(getenv(envRegion))
	}
	if r == "" {
		missing = append(missing, "--region (or $"+envRegion+")")
	}
	if *f.timeout <= 0 {
		problems = append(problems, "--timeout must be positive")
	}
	if *f.interval < time.Second {
		problems = append(problems, "--status-interval must be at least 1s")
	}
	if *f.grace < 0 {
		problems = append(problems, "--health-grace-period must not be negative")
	}
	s := strings.ToUpper(strings.TrimSpace(*f.scheme))
	if s != kms.SchemeHTTPS && s != kms.SchemeHTTP {
		problems = append(problems, fmt.Sprintf("--scheme %q: want HTTPS or HTTP", *f.scheme))
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(*f.level))
	if err != nil || *f.level == "" {
		problems = append(problems, fmt.Sprintf("--log-level %q: want debug, info, warn or error", *f.level))
	}
	cfg.logLevel = lvl
	// The SDK prints whole request URLs and response bodies (plaintext DEKs, credentials) to stdout
	// when DEBUG contains "sdk"; a KMS plugin must never run like that.
	if slices.Contains(strings.Split(getenv("DEBUG"), ","), "sdk") {
		problems = append(problems, "DEBUG contains \"sdk\", which makes the Alibaba Cloud SDK print data keys and credentials: unset it")
	}
	creds, credErr := alicloud.DefaultCredentials(alicloud.ChainOptions{Getenv: getenv})
	if credErr != nil {
		problems = append(problems, credErr.Error())
	}
	if len(missing) > 0 {
		problems = append([]string{"missing " + strings.Join(missing, ", ")}, problems...)
	}
	if len(problems) > 0 {
		return config{}, errors.New(strings.Join(problems, "; "))
	}
	cfg.kms = kms.Config{
		Region:         r,
		Endpoint:       strings.TrimSpace(*f.endpoint),
		PublicEndpoint: !*f.vpc,
		Scheme:         s,
		Credentials:    creds,
		CallTimeout:    *f.timeout,
	}
	return cfg, nil
}

// usage prints the flags.
func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: rekey-kms-plugin --listen unix:///path.sock --key-id KEY --region REGION [flags]")
	fmt.Fprintln(w, "A Kubernetes KMS v2 plugin backed by Alibaba Cloud KMS. Credentials, first found: $"+alicloud.EnvAccessKeyID+
		" and $"+alicloud.EnvAccessKeySecret+" (optional $"+alicloud.EnvSecurityToken+", not refreshed); RRSA $"+
		alicloud.EnvRoleARN+", $"+alicloud.EnvOIDCProviderARN+" and $"+alicloud.EnvOIDCTokenFile+
		"; the ECS instance's RAM role (off with $"+alicloud.EnvECSMetadataDisabled+"=true).")
	fs, _ := newFlags()
	fs.SetOutput(w)
	fs.PrintDefaults()
}
