package alicloud

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	sdkcredentials "github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
)

// Defaults of ChainOptions.
const (
	// DefaultSTSTimeout bounds the connect and the read of the OIDC token exchange with STS.
	DefaultSTSTimeout = 5 * time.Second
	// DefaultMetadataTimeout bounds the connect and the read of each call to the ECS instance
	// metadata service (the SDK's own default).
	DefaultMetadataTimeout = time.Second
	// DefaultRoleSessionName names the session of a role assumed with an OIDC token; it shows in
	// ActionTrail as the assumed role's session.
	DefaultRoleSessionName = "rekey"
	// metadataHost is the ECS instance metadata service, fixed in the SDK.
	metadataHost = "100.100.100.200"
)

// Sources DefaultCredentials picks from, as Provider.Source reports them.
const (
	// SourceEnvAccessKey is an AccessKey pair from the environment.
	SourceEnvAccessKey = "env access key"
	// SourceEnvSTSToken is an STS token from the environment; it is not refreshed.
	SourceEnvSTSToken = "env sts token"
	// SourceOIDC is a RAM role assumed with the pod's OIDC token (RRSA), refreshed before it
	// expires.
	SourceOIDC = "rrsa oidc role"
	// SourceECSRAMRole is the ECS instance's RAM role from the metadata service, refreshed before
	// it expires.
	SourceECSRAMRole = "ecs ram role"
)

// ChainOptions tune DefaultCredentials. The zero value reads the process environment.
type ChainOptions struct {
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// STSEndpoint is the STS host[:port] the OIDC token is exchanged at, always over HTTPS. Empty
	// means the SDK's rule: sts-vpc.<region>.aliyuncs.com when ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED
	// is true and ALIBABA_CLOUD_STS_REGION is set, sts.<region>.aliyuncs.com when only the region
	// is set, otherwise sts.aliyuncs.com.
	STSEndpoint string
	// STSTimeout bounds the connect and the read of the exchange (default DefaultSTSTimeout).
	STSTimeout time.Duration
	// MetadataTimeout bounds the connect and the read of each call to the ECS metadata service
	// (default DefaultMetadataTimeout).
	MetadataTimeout time.Duration
	// RoleSessionName names the OIDC role session (default DefaultRoleSessionName).
	RoleSessionName string
}

// DefaultCredentials returns the Alibaba Cloud credentials chain's provider, chosen once from the
// environment, in this order:
//
//  1. ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, with
//     ALIBABA_CLOUD_SECURITY_TOKEN for an STS token (which cannot be refreshed);
//  2. RRSA: ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and
//     ALIBABA_CLOUD_OIDC_TOKEN_FILE: the role is assumed with the token file's OIDC token and
//     refreshed before it expires (SDK OIDCCredentialsProvider);
//  3. otherwise the ECS instance's RAM role from the metadata service (SDK
//     ECSRAMRoleCredentialsProvider), refreshed before it expires, unless
//     ALIBABA_CLOUD_ECS_METADATA_DISABLED is true.
//
// A source that is only partly configured (an AccessKey ID without its secret, two of the three
// RRSA variables) is an error naming what is missing, not a reason to try the next one. No
// network call is made here: an unreachable STS or metadata service shows in Retrieve's error.
// The provider is safe for concurrent use.
func DefaultCredentials(opts ChainOptions) (Provider, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }

	if env(EnvAccessKeyID) != "" || env(EnvAccessKeySecret) != "" || env(EnvSecurityToken) != "" {
		c, err := CredentialsFromLookup(getenv)
		if err != nil {
			return nil, err
		}
		if c.SecurityToken != "" {
			return staticProvider{c: c, source: SourceEnvSTSToken}, nil
		}
		return staticProvider{c: c, source: SourceEnvAccessKey}, nil
	}

	rrsa := map[string]string{EnvRoleARN: env(EnvRoleARN), EnvOIDCProviderARN: env(EnvOIDCProviderARN), EnvOIDCTokenFile: env(EnvOIDCTokenFile)}
	var set, missing []string
	for _, k := range []string{EnvRoleARN, EnvOIDCProviderARN, EnvOIDCTokenFile} {
		if rrsa[k] != "" {
			set = append(set, k)
		} else {
			missing = append(missing, k)
		}
	}
	if len(set) > 0 {
		if len(missing) > 0 {
			return nil, fmt.Errorf("credentials: RRSA needs %s, %s and %s: %s not set",
				EnvRoleARN, EnvOIDCProviderARN, EnvOIDCTokenFile, strings.Join(missing, " and "))
		}
		return newOIDCProvider(opts, env, rrsa)
	}

	if strings.EqualFold(env(EnvECSMetadataDisabled), "true") {
		return nil, fmt.Errorf("credentials: none found: set %s and %s (and %s for an STS token), or %s, %s and %s for RRSA "+
			"(the ECS RAM role is disabled by %s)", EnvAccessKeyID, EnvAccessKeySecret, EnvSecurityToken,
			EnvRoleARN, EnvOIDCProviderARN, EnvOIDCTokenFile, EnvECSMetadataDisabled)
	}
	timeout := opts.MetadataTimeout
	if timeout <= 0 {
		timeout = DefaultMetadataTimeout
	}
	p, err := sdkcredentials.NewECSRAMRoleCredentialsProviderBuilder().
		WithRoleName(env(EnvECSMetadata)).
		WithDisableIMDSv1(strings.EqualFold(env(EnvIMDSv1Disabled), "true")).
		WithHttpOptions(&sdkcredentials.HttpOptions{ConnectTimeout: timeout, ReadTimeout: timeout}).
		Build()
	if err != nil {
		return nil, fmt.Errorf("credentials: ecs ram role: %w", Sanitize(err, "sts"))
	}
	return newSDKProvider(p, SourceECSRAMRole,
		"no AccessKey and no RRSA variables are set, so the ECS instance metadata service ("+metadataHost+") was asked for "+
			"the instance's RAM role credentials: run on an ECS instance with a RAM role attached, or set "+
			EnvAccessKeyID+" and "+EnvAccessKeySecret+", or the RRSA variables "+EnvRoleARN+", "+EnvOIDCProviderARN+
			" and "+EnvOIDCTokenFile), nil
}

// newOIDCProvider builds the SDK's OIDC provider with every value given explicitly, so the SDK
// reads nothing from the process environment.
func newOIDCProvider(opts ChainOptions, env func(string) string, rrsa map[string]string) (Provider, error) {
	endpoint := strings.TrimSpace(opts.STSEndpoint)
	if endpoint == "" {
		endpoint = "sts.aliyuncs.com"
		if region := env(EnvSTSRegion); region != "" {
			prefix := "sts"
			if strings.EqualFold(env(EnvVPCEndpointEnabled), "true") {
				prefix = "sts-vpc"
			}
			endpoint = prefix + "." + region + ".aliyuncs.com"
		}
	} else if err := validateEndpoint(endpoint); err != nil {
		return nil, fmt.Errorf("credentials: sts %w", err)
	}
	timeout := opts.STSTimeout
	if timeout <= 0 {
		timeout = DefaultSTSTimeout
	}
	session := opts.RoleSessionName
	if session == "" {
		session = DefaultRoleSessionName
	}
	p, err := sdkcredentials.NewOIDCCredentialsProviderBuilder().
		WithRoleArn(rrsa[EnvRoleARN]).
		WithOIDCProviderARN(rrsa[EnvOIDCProviderARN]).
		WithOIDCTokenFilePath(rrsa[EnvOIDCTokenFile]).
		WithRoleSessionName(session).
		WithSTSEndpoint(endpoint).
		WithHttpOptions(&sdkcredentials.HttpOptions{ConnectTimeout: timeout, ReadTimeout: timeout}).
		Build()
	if err != nil {
		return nil, fmt.Errorf("credentials: rrsa: %w", Sanitize(err, "sts"))
	}
	return newSDKProvider(p, SourceOIDC, "the role "+Redact(rrsa[EnvRoleARN])+" is assumed at https://"+endpoint+
		" with the OIDC token in "+rrsa[EnvOIDCTokenFile]+": check that the file exists and that the role trusts the OIDC provider"), nil
}

// staticProvider is static credentials with the name of where they came from.
type staticProvider struct {
	c      Credentials
	source string
}

// Retrieve implements Provider.
func (p staticProvider) Retrieve(ctx context.Context) (Credentials, error) { return p.c.Retrieve(ctx) }

// Source implements Provider.
func (p staticProvider) Source() string { return p.source }

// sdkProvider makes one of the SDK's credentials providers, which are not safe for concurrent use
// and take no context, a Provider: one GetCredentials at a time (the SDK provider caches and
// refreshes shortly before expiry), while waiters honour their context.
type sdkProvider struct {
	p      sdkcredentials.CredentialsProvider
	source string
	hint   string
	sem    chan struct{}
}

func newSDKProvider(p sdkcredentials.CredentialsProvider, source, hint string) *sdkProvider {
	return &sdkProvider{p: p, source: source, hint: hint, sem: make(chan struct{}, 1)}
}

// FromSDK makes an Alibaba Cloud SDK credentials provider (github.com/aliyun/alibaba-cloud-sdk-go/
// sdk/auth/credentials) a Provider that is safe for concurrent use. source names it in logs and
// errors.
func FromSDK(p sdkcredentials.CredentialsProvider, source string) Provider {
	return newSDKProvider(p, source, "")
}

// Retrieve implements Provider.
func (s *sdkProvider) Retrieve(ctx context.Context) (Credentials, error) {
	if err := ctx.Err(); err != nil {
		return Credentials{}, &CredentialsError{Source: s.source, Err: err}
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return Credentials{}, &CredentialsError{Source: s.source, Err: ctx.Err()}
	}
	defer func() { <-s.sem }()
	cc, err := s.p.GetCredentials()
	if err == nil && cc == nil {
		err = errors.New("the provider returned no credentials")
	}
	if err != nil {
		return Credentials{}, &CredentialsError{Source: s.source, Hint: s.hint, Err: Sanitize(err, "sts")}
	}
	c := Credentials{AccessKeyID: cc.AccessKeyId, AccessKeySecret: cc.AccessKeySecret, SecurityToken: cc.SecurityToken}
	if err := c.Validate(); err != nil {
		return Credentials{}, &CredentialsError{Source: s.source, Err: err}
	}
	return c, nil
}

// Source implements Provider.
func (s *sdkProvider) Source() string { return s.source }

// CredentialsError is a failure to obtain credentials from a Provider.
type CredentialsError struct {
	// Source is the provider's Source.
	Source string
	// Hint says what to check, when the source knows.
	Hint string
	// Err is the sanitized cause.
	Err error
}

// Error returns "credentials from <source>: <cause> (<hint>)".
func (e *CredentialsError) Error() string {
	msg := "credentials from " + e.Source + ": " + e.Err.Error()
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap returns the cause.
func (e *CredentialsError) Unwrap() error { return e.Err }
