package handler

import (
	"context"
	"errors"
	"time"

	"github.com/aliyun/fc-runtime-go-sdk/fccontext"

	"github.com/rekey-dev/rekey/shared/alicloud"
)

// Invocation is what Function Compute says about the current invocation.
type Invocation struct {
	// RequestID is the FC request id ("" outside Function Compute).
	RequestID string
	// Credentials are the function role's STS credentials for this invocation (zero when FC gave
	// none).
	Credentials alicloud.Credentials
	// RetryCount is FC's count of earlier attempts of this invocation.
	RetryCount int
}

type invocationKey struct{}

// begin reads the FC context once (fccontext.FromContext writes to the context's value, so it is
// not called again from concurrent goroutines) and keeps what rekey needs in ctx.
func begin(ctx context.Context) (context.Context, Invocation) {
	if inv, ok := ctx.Value(invocationKey{}).(Invocation); ok {
		return ctx, inv
	}
	var inv Invocation
	if fc, ok := fccontext.FromContext(ctx); ok {
		inv = Invocation{
			RequestID:  fc.RequestID,
			RetryCount: fc.RetryCount,
			Credentials: alicloud.Credentials{
				AccessKeyID:     fc.Credentials.AccessKeyId,
				AccessKeySecret: fc.Credentials.AccessKeySecret,
				SecurityToken:   fc.Credentials.SecurityToken,
			},
		}
	}
	return context.WithValue(ctx, invocationKey{}, inv), inv
}

// Credentials returns the credentials provider of the functions: the invocation's credentials from
// the FC context (the function's role, as Function Compute hands them to each invocation), or
// fallback (the Alibaba Cloud credentials chain: FC also sets ALIBABA_CLOUD_* for the role) when
// the context carries none.
func Credentials(fallback alicloud.Provider) alicloud.Provider {
	return alicloud.CredentialsFunc(func(ctx context.Context) (alicloud.Credentials, error) {
		_, inv := begin(ctx)
		if inv.Credentials.AccessKeyID != "" && inv.Credentials.AccessKeySecret != "" {
			return inv.Credentials, nil
		}
		if fallback == nil {
			return alicloud.Credentials{}, errors.New("no credentials in the Function Compute context and no fallback")
		}
		return fallback.Retrieve(ctx)
	})
}

// stopMargin is how long before the invocation's deadline work stops: a tenth of the time left at
// the start, between 1 s and 30 s.
func stopMargin(ctx context.Context, now time.Time) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 30 * time.Second
	}
	return min(max(dl.Sub(now)/10, time.Second), 30*time.Second)
}

// Failing returns a handler that fails every invocation with err: the functions' answer to a
// configuration error, so that every invocation (and its log) says what to fix.
func Failing(err error) func(ctx context.Context, payload []byte) (any, error) {
	return func(context.Context, []byte) (any, error) { return nil, err }
}
