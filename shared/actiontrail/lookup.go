package actiontrail

import (
	"context"
	"net/http"
	"strconv"
	"time"

	sdktrail "github.com/aliyun/alibaba-cloud-sdk-go/services/actiontrail"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Config configures an SDKClient. Region and Credentials are required.
type Config struct {
	// Region is the ActionTrail region, e.g. "cn-hangzhou".
	Region string
	// Endpoint is host[:port]. Empty means actiontrail-vpc.<Region>.aliyuncs.com, or
	// actiontrail.<Region>.aliyuncs.com when PublicEndpoint is set.
	Endpoint string
	// PublicEndpoint picks the public endpoint instead of the VPC one when Endpoint is empty.
	PublicEndpoint bool
	// Scheme is HTTPS (default) or HTTP, for a loopback Endpoint only (local stack and tests).
	Scheme string
	// Credentials sign every request: static alicloud.Credentials (kms.Credentials), an
	// alicloud.CredentialsFunc, or the chain from alicloud.DefaultCredentials.
	Credentials alicloud.Provider
	// CallTimeout bounds one page request (default alicloud.DefaultCallTimeout, 10s).
	CallTimeout time.Duration
	// Retry bounds retries of one page (default retry.DefaultPolicy).
	Retry retry.Policy
	// Transport carries the HTTP requests (default a transport of the client's own).
	Transport http.RoundTripper
}

// SDKClient looks records up with the Alibaba Cloud SDK, through an alicloud.Client (the SDK
// client construction shared with package kms). It is safe for concurrent use.
type SDKClient struct {
	cfg Config
	api *alicloud.Client
}

var _ Lookuper = (*SDKClient)(nil)

// NewSDKClient validates cfg and returns a client. It makes no call.
func NewSDKClient(cfg Config) (*SDKClient, error) {
	api, err := alicloud.New(alicloud.Config{Product: alicloud.ActionTrail, Region: cfg.Region, Endpoint: cfg.Endpoint,
		PublicEndpoint: cfg.PublicEndpoint, Scheme: cfg.Scheme, Credentials: cfg.Credentials, CallTimeout: cfg.CallTimeout,
		Transport: cfg.Transport, UserAgent: "verify"})
	if err != nil {
		return nil, err
	}
	r := api.Config()
	cfg.Region, cfg.Endpoint, cfg.Scheme, cfg.CallTimeout = r.Region, r.Endpoint, r.Scheme, r.CallTimeout
	return &SDKClient{cfg: cfg, api: api}, nil
}

// Endpoint is the ActionTrail host[:port] the client calls.
func (c *SDKClient) Endpoint() string { return c.cfg.Endpoint }

// LookupEvents returns the records matching q, newest first, following NextToken pages up to
// q.Max records and q.MaxPages pages (Result.Truncated says when it stopped early). Each page is
// retried on its own.
func (c *SDKClient) LookupEvents(ctx context.Context, q Query) (Result, error) {
	q = q.withDefaults(time.Now())
	var attrs []sdktrail.LookupEventsLookupAttribute
	for _, a := range q.attributes() {
		attrs = append(attrs, sdktrail.LookupEventsLookupAttribute{Key: a[0], Value: a[1]})
	}
	return collect(ctx, q, func(ctx context.Context, token string, size int) (page, error) {
		var resp *sdktrail.LookupEventsResponse
		err := retry.Do(ctx, c.cfg.Retry, func(ctx context.Context) error {
			req := sdktrail.CreateLookupEventsRequest()
			req.StartTime = q.Start.UTC().Format(time.RFC3339)
			req.EndTime = q.End.UTC().Format(time.RFC3339)
			req.MaxResults = strconv.Itoa(size)
			req.NextToken = token
			if len(attrs) > 0 {
				req.LookupAttribute = &attrs
			}
			resp = sdktrail.CreateLookupEventsResponse()
			return c.api.Do(ctx, req, resp)
		}, nil)
		if err != nil {
			return page{}, err
		}
		return decodePage(resp.Events, resp.NextToken)
	})
}
