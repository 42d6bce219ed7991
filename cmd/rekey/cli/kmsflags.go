package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/kms"
)

// credentialsProbeTimeout bounds the first credentials retrieval (ECS metadata, STS) at start.
const credentialsProbeTimeout = 15 * time.Second

// kmsFlags locate the KMS key that encrypts the cluster's Secrets. Credentials come from the
// Alibaba Cloud credentials chain (alicloud.DefaultCredentials: ALIBABA_CLOUD_ACCESS_KEY_ID,
// ALIBABA_CLOUD_ACCESS_KEY_SECRET and ALIBABA_CLOUD_SECURITY_TOKEN; RRSA; the ECS RAM role),
// never from flags.
type kmsFlags struct {
	keyID, region, endpoint, scheme string
	public                          bool
}

func (f *kmsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.keyID, "kms-key-id", "", "KMS key (ID, alias/NAME or ARN) that encrypts the cluster's Secrets")
	fs.StringVar(&f.region, "kms-region", "", "KMS region, e.g. cn-hangzhou (default $ALIBABA_CLOUD_REGION_ID)")
	fs.StringVar(&f.endpoint, "kms-endpoint", "", "KMS endpoint host[:port] (default the region's VPC endpoint)")
	fs.StringVar(&f.scheme, "kms-scheme", "HTTPS", "HTTPS, or HTTP for a loopback endpoint (the local stack) only")
	fs.BoolVar(&f.public, "kms-public-endpoint", false, "use kms.<region>.aliyuncs.com instead of the VPC endpoint")
}

// client builds the KMS client, or nil when no key was named. The credentials are retrieved once
// here, so a machine without any (no environment AccessKey, no RRSA, not an ECS instance with a
// RAM role) fails at start with a usage error that says what to set.
func (f *kmsFlags) client(getenv func(string) string) (kms.Client, *kms.Config, error) {
	if f.keyID == "" {
		return nil, nil, nil
	}
	region := f.region
	if region == "" {
		region = getenv("ALIBABA_CLOUD_REGION_ID")
	}
	if region == "" {
		return nil, nil, usagef("--kms-key-id needs --kms-region (or ALIBABA_CLOUD_REGION_ID)")
	}
	creds, err := alicloud.DefaultCredentials(alicloud.ChainOptions{Getenv: getenv})
	if err != nil {
		return nil, nil, &usageError{fmt.Errorf("kms %w", err)}
	}
	cfg := kms.Config{Region: region, Endpoint: f.endpoint, PublicEndpoint: f.public, Scheme: f.scheme, Credentials: creds}
	c, err := kms.NewSDKClient(cfg)
	if err != nil {
		return nil, nil, &usageError{err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), credentialsProbeTimeout)
	defer cancel()
	if _, err := creds.Retrieve(ctx); err != nil {
		return nil, nil, &usageError{fmt.Errorf("kms %w", err)}
	}
	return c, &cfg, nil
}
