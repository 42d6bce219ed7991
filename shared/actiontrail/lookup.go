package actiontrail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdktrail "github.com/aliyun/alibaba-cloud-sdk-go/services/actiontrail"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Query selects records. ActionTrail matches every attribute given.
type Query struct {
	// Start and End bound the event time (End zero: now).
	Start, End time.Time
	// EventName, ResourceName (a KMS key ID), EventRW filter server-side when set.
	EventName, ResourceName, EventRW string
	// Max bounds the number of records returned over all pages (default 1000).
	Max int
}

// Lookuper finds ActionTrail records.
type Lookuper interface {
	LookupEvents(ctx context.Context, q Query) ([]Event, error)
}

// Config configures an SDKClient. Region and Credentials are required.
type Config struct {
	Region string
	// Endpoint is host[:port]; empty means actiontrail.<Region>.aliyuncs.com.
	Endpoint string
	// Scheme is HTTPS (default) or HTTP (local stack and tests only).
	Scheme      string
	Credentials kms.Credentials
	// CallTimeout bounds one page request (default 10s).
	CallTimeout time.Duration
	// Retry bounds retries of one page (default retry.DefaultPolicy).
	Retry retry.Policy
}

// SDKClient looks records up with the Alibaba Cloud SDK. It is safe for concurrent use.
type SDKClient struct{ cfg Config }

var _ Lookuper = (*SDKClient)(nil)

// NewSDKClient validates cfg.
func NewSDKClient(cfg Config) (*SDKClient, error) {
	if cfg.Region == "" {
		return nil, errors.New("actiontrail config: region is required")
	}
	if err := cfg.Credentials.Validate(); err != nil {
		return nil, fmt.Errorf("actiontrail config: %w", err)
	}
	switch cfg.Scheme {
	case "":
		cfg.Scheme = "HTTPS"
	case "HTTPS", "HTTP":
	default:
		return nil, fmt.Errorf("actiontrail config: scheme %q: want HTTPS or HTTP", cfg.Scheme)
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = "actiontrail." + cfg.Region + ".aliyuncs.com"
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	return &SDKClient{cfg: cfg}, nil
}

// ctxTransport binds the SDK's requests to a call's context (the SDK takes no context).
type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.base.RoundTrip(r.WithContext(t.ctx))
}

// LookupEvents returns the records matching q, newest first, following NextToken pages.
func (c *SDKClient) LookupEvents(ctx context.Context, q Query) ([]Event, error) {
	if q.Max <= 0 {
		q.Max = 1000
	}
	if q.End.IsZero() {
		q.End = time.Now()
	}
	var attrs []sdktrail.LookupEventsLookupAttribute
	for k, v := range map[string]string{"EventName": q.EventName, "ResourceName": q.ResourceName, "EventRW": q.EventRW} {
		if v != "" {
			attrs = append(attrs, sdktrail.LookupEventsLookupAttribute{Key: k, Value: v})
		}
	}
	var out []Event
	token := ""
	for len(out) < q.Max {
		var resp *sdktrail.LookupEventsResponse
		err := retry.Do(ctx, c.cfg.Retry, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
			defer cancel()
			cl, err := c.sdk(ctx)
			if err != nil {
				return err
			}
			req := sdktrail.CreateLookupEventsRequest()
			req.SetScheme(c.cfg.Scheme)
			req.StartTime = q.Start.UTC().Format(time.RFC3339)
			req.EndTime = q.End.UTC().Format(time.RFC3339)
			req.MaxResults = strconv.Itoa(min(50, q.Max-len(out)))
			req.NextToken = token
			if len(attrs) > 0 {
				req.LookupAttribute = &attrs
			}
			if dl, ok := ctx.Deadline(); ok {
				req.SetReadTimeout(time.Until(dl))
				req.SetConnectTimeout(time.Until(dl))
			}
			resp, err = cl.LookupEvents(req)
			return err
		}, nil)
		if err != nil {
			return nil, fmt.Errorf("actiontrail lookup events: %w", err)
		}
		for i, raw := range resp.Events {
			b, err := json.Marshal(raw)
			if err != nil {
				return nil, fmt.Errorf("actiontrail lookup events: event %d: %w", i, err)
			}
			e, err := Decode(b)
			if err != nil {
				return nil, fmt.Errorf("actiontrail lookup events: %w", err)
			}
			out = append(out, e)
		}
		if resp.NextToken == "" || len(resp.Events) == 0 {
			break
		}
		token = resp.NextToken
	}
	return out, nil
}

func (c *SDKClient) sdk(ctx context.Context) (*sdktrail.Client, error) {
	cr := c.cfg.Credentials
	var cl *sdktrail.Client
	var err error
	if cr.SecurityToken != "" {
		cl, err = sdktrail.NewClientWithStsToken(c.cfg.Region, cr.AccessKeyID, cr.AccessKeySecret, cr.SecurityToken)
	} else {
		cl, err = sdktrail.NewClientWithAccessKey(c.cfg.Region, cr.AccessKeyID, cr.AccessKeySecret)
	}
	if err != nil {
		return nil, fmt.Errorf("new actiontrail sdk client: %w", err)
	}
	cl.Domain = c.cfg.Endpoint
	cl.SetTransport(ctxTransport{ctx: ctx, base: http.DefaultTransport})
	cl.SetCloseTrace(true)
	cl.AppendUserAgent("rekey", "verify")
	return cl, nil
}

var _ = requests.POST
