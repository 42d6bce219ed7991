package alicloud

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Environment variables of the Alibaba Cloud credentials chain. Function Compute sets the first
// three for a function's role; ACK's RRSA webhook sets the OIDC ones in a pod.
const (
	// EnvAccessKeyID holds the AccessKey ID.
	EnvAccessKeyID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
	// EnvAccessKeySecret holds the AccessKey secret.
	EnvAccessKeySecret = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
	// EnvSecurityToken holds the STS security token of an STS AccessKey (optional otherwise). An
	// STS token given this way cannot be refreshed: it is used until it expires.
	EnvSecurityToken = "ALIBABA_CLOUD_SECURITY_TOKEN"
	// EnvRoleARN is the RAM role assumed with the OIDC token (RRSA).
	EnvRoleARN = "ALIBABA_CLOUD_ROLE_ARN"
	// EnvOIDCProviderARN is the cluster's OIDC identity provider in RAM (RRSA).
	EnvOIDCProviderARN = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN"
	// EnvOIDCTokenFile is the path of the pod's projected service account token (RRSA). It is
	// read again at every refresh, so a rotated token is picked up.
	EnvOIDCTokenFile = "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
	// EnvSTSRegion makes the OIDC exchange use the region's STS endpoint instead of the central
	// sts.aliyuncs.com.
	EnvSTSRegion = "ALIBABA_CLOUD_STS_REGION"
	// EnvVPCEndpointEnabled ("true") makes the OIDC exchange use the region's VPC STS endpoint.
	EnvVPCEndpointEnabled = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED"
	// EnvECSMetadata names the ECS instance's RAM role (optional: asked from the metadata service
	// otherwise).
	EnvECSMetadata = "ALIBABA_CLOUD_ECS_METADATA"
	// EnvECSMetadataDisabled ("true") removes the ECS RAM role from the chain.
	EnvECSMetadataDisabled = "ALIBABA_CLOUD_ECS_METADATA_DISABLED"
	// EnvIMDSv1Disabled ("true") makes the ECS RAM role provider require a metadata token
	// (IMDSv2).
	EnvIMDSv1Disabled = "ALIBABA_CLOUD_IMDSV1_DISABLED"
)

// Provider gives the credentials to sign the next request with. Implementations must be safe for
// concurrent use; Retrieve must honour ctx while it waits, and neither Retrieve's errors nor
// Source may contain a secret.
type Provider interface {
	// Retrieve returns the current credentials, refreshing them first when they are about to
	// expire.
	Retrieve(ctx context.Context) (Credentials, error)
	// Source says where the credentials come from ("env access key", "ecs ram role", ...), for
	// logs.
	Source() string
}

// Credentials is an AccessKey pair, optionally an STS one with its SecurityToken. As a Provider it
// always returns itself (static credentials). Its String and GoString never print the secret or
// the token.
type Credentials struct {
	// AccessKeyID identifies the AccessKey (an STS AccessKey ID starts with "STS.").
	AccessKeyID string
	// AccessKeySecret signs requests.
	AccessKeySecret string
	// SecurityToken accompanies an STS AccessKey; empty for a RAM user's or account's AccessKey.
	SecurityToken string
}

var _ Provider = Credentials{}

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

// Retrieve implements Provider: c itself, if it is complete.
func (c Credentials) Retrieve(context.Context) (Credentials, error) {
	if err := c.Validate(); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// Source implements Provider: "static access key" or "static sts token".
func (c Credentials) Source() string {
	if c.SecurityToken != "" {
		return "static sts token"
	}
	return "static access key"
}

// CredentialsFunc is a Provider that asks a function for the current credentials, e.g. Function
// Compute's per-invocation credentials from the handler's context. The function must be safe for
// concurrent use.
type CredentialsFunc func(ctx context.Context) (Credentials, error)

var _ Provider = CredentialsFunc(nil)

// Retrieve implements Provider.
func (f CredentialsFunc) Retrieve(ctx context.Context) (Credentials, error) {
	c, err := f(ctx)
	if err != nil {
		return Credentials{}, err
	}
	if err := c.Validate(); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// Source implements Provider.
func (f CredentialsFunc) Source() string { return "credentials function" }

// CredentialsFromLookup reads ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and the
// optional ALIBABA_CLOUD_SECURITY_TOKEN through getenv (values are trimmed). The error names every
// missing variable.
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
		return Credentials{}, fmt.Errorf("credentials: environment variable %s is not set", missing[0])
	default:
		return Credentials{}, fmt.Errorf("credentials: environment variables %s are not set", strings.Join(missing, ", "))
	}
}
