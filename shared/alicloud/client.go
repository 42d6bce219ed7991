package alicloud

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	sdkcredentials "github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/responses"
)

// maxIdleSDKClients bounds the SDK clients kept between calls.
const maxIdleSDKClients = 16

// Client sends requests of one product with the Alibaba Cloud SDK. It is safe for concurrent use.
//
// The SDK's client is not: every call rewrites its http.Client timeout. Client therefore keeps a
// small pool of SDK clients, each used by one call at a time, all sharing one HTTP transport. Each
// SDK client's transport is wrapped so that the call's context governs the HTTP request, and its
// credentials provider hands out the credentials retrieved for the call.
type Client struct {
	cfg        Config
	host, port string
	base       http.RoundTripper
	owned      *http.Transport // the transport made here, closed by Close; nil if cfg.Transport was given
	idle       chan *conn
}

// conn is one SDK client with its per-call context and credentials.
type conn struct {
	sdk   *sdk.Client
	rt    *ctxTransport
	creds *callCredentials
}

// ctxTransport runs each request under the context of the call that owns the SDK client.
type ctxTransport struct {
	base http.RoundTripper
	ctx  context.Context // set by the owning call, read in the same goroutine by RoundTrip
}

// RoundTrip implements http.RoundTripper.
func (t *ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.ctx != nil {
		r = r.WithContext(t.ctx)
	}
	return t.base.RoundTrip(r)
}

// callCredentials is the SDK credentials provider of one pooled SDK client: the credentials the
// owning call retrieved.
type callCredentials struct {
	c Credentials // set by the owning call, read in the same goroutine by the SDK's signer
}

var _ sdkcredentials.CredentialsProvider = (*callCredentials)(nil)

// GetCredentials implements the SDK's CredentialsProvider.
func (p *callCredentials) GetCredentials() (*sdkcredentials.Credentials, error) {
	if p.c.AccessKeyID == "" {
		return nil, errors.New("no credentials were retrieved for this call")
	}
	return &sdkcredentials.Credentials{AccessKeyId: p.c.AccessKeyID, AccessKeySecret: p.c.AccessKeySecret,
		SecurityToken: p.c.SecurityToken, ProviderName: p.GetProviderName()}, nil
}

// GetProviderName implements the SDK's CredentialsProvider.
func (p *callCredentials) GetProviderName() string { return "rekey" }

// New validates cfg (see Config for defaults) and returns a client. It makes no call.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.Resolve()
	if err != nil {
		return nil, err
	}
	host, port, err := splitEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("%s config: %w", cfg.Product.Name, err)
	}
	c := &Client{cfg: cfg, host: host, port: port, base: cfg.Transport, idle: make(chan *conn, maxIdleSDKClients)}
	if c.base == nil {
		c.owned = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: cfg.CallTimeout, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          maxIdleSDKClients,
			MaxIdleConnsPerHost:   maxIdleSDKClients,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   cfg.CallTimeout,
			ExpectContinueTimeout: time.Second,
		}
		c.base = c.owned
	}
	cn, err := c.newConn()
	if err != nil {
		return nil, err
	}
	c.idle <- cn
	return c, nil
}

// Config is the resolved configuration (endpoint, scheme and timeout filled in).
func (c *Client) Config() Config { return c.cfg }

// Endpoint is the host[:port] the client calls.
func (c *Client) Endpoint() string { return c.cfg.Endpoint }

// Scheme is "HTTPS" or "HTTP".
func (c *Client) Scheme() string { return c.cfg.Scheme }

// CredentialsSource is the Source of the client's credentials provider, for logs.
func (c *Client) CredentialsSource() string { return c.cfg.Credentials.Source() }

// Close releases idle connections. The client stays usable; later calls open new connections.
func (c *Client) Close() error {
	if c.owned != nil {
		c.owned.CloseIdleConnections()
	} else if ci, ok := c.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
	return nil
}

func (c *Client) newConn() (*conn, error) {
	creds := &callCredentials{}
	cl, err := sdk.NewClientWithOptions(c.cfg.Region, sdk.NewConfig().WithScheme(c.cfg.Scheme), creds)
	if err != nil {
		return nil, fmt.Errorf("new %s sdk client: %w", c.cfg.Product.Name, Sanitize(err, c.cfg.Product.Name))
	}
	rt := &ctxTransport{base: c.base}
	cl.SetTransport(rt)
	// Tracing spans would be named after the request URI, which carries every parameter.
	cl.SetCloseTrace(true)
	ua := c.cfg.UserAgent
	if ua == "" {
		ua = c.cfg.Product.Name
	}
	cl.AppendUserAgent("rekey", ua)
	return &conn{sdk: cl, rt: rt, creds: creds}, nil
}

func (c *Client) acquire() (*conn, error) {
	select {
	case cn := <-c.idle:
		return cn, nil
	default:
		return c.newConn()
	}
}

func (c *Client) release(cn *conn) {
	cn.rt.ctx = nil
	cn.creds.c = Credentials{}
	select {
	case c.idle <- cn:
	default:
	}
}

// Do sends req and decodes the answer into resp: one attempt, bounded by CallTimeout and ctx,
// which both cancel the HTTP request. It retrieves the credentials (within the same bounds), points
// req at the endpoint (request.Domain and request.Port, for RPC and ROA requests alike) with the
// scheme and the timeouts left, and returns a sanitized error (see Sanitize; refs are redacted
// from server messages). When the per-call timeout fires while ctx is still live, the error wraps
// context.DeadlineExceeded, so retry.Classify calls it retriable.
func (c *Client) Do(ctx context.Context, req requests.AcsRequest, resp responses.AcsResponse, refs ...string) error {
	callCtx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	err := c.do(callCtx, req, resp, refs)
	if err != nil && callCtx.Err() != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		// The per-call timeout fired; make sure the error says so, so it is retried.
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

func (c *Client) do(ctx context.Context, req requests.AcsRequest, resp responses.AcsResponse, refs []string) error {
	creds, err := c.cfg.Credentials.Retrieve(ctx)
	if err != nil {
		var ce *CredentialsError
		if !errors.As(err, &ce) {
			err = &CredentialsError{Source: c.cfg.Credentials.Source(), Err: Sanitize(err, c.cfg.Product.Name)}
		}
		return err
	}
	cn, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.release(cn)
	cn.rt.ctx = ctx
	cn.creds.c = creds
	if err := c.prepare(ctx, req); err != nil {
		return err
	}
	return Sanitize(cn.sdk.DoAction(req, resp), c.cfg.Product.Name, refs...)
}

// prepare points req at the endpoint with the scheme and the time left of ctx.
func (c *Client) prepare(ctx context.Context, req requests.AcsRequest) error {
	req.SetScheme(c.cfg.Scheme)
	req.SetDomain(c.host)
	if err := setPort(req, c.port); err != nil {
		return fmt.Errorf("%s request: %w", c.cfg.Product.Name, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		left := max(time.Until(dl), time.Millisecond)
		req.SetReadTimeout(left)
		req.SetConnectTimeout(left)
	}
	return nil
}

// portFields caches, per request type, the index path of the SDK's exported Port field.
var portFields sync.Map // reflect.Type -> []int

// setPort sets the SDK request's Port field (the requests.AcsRequest interface has no setter).
// Both RPC and ROA requests build their URL from Domain and Port: putting "host:port" in Domain
// works for RPC only.
func setPort(req requests.AcsRequest, port string) error {
	v := reflect.ValueOf(req)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("request %T is not a pointer to an SDK request struct", req)
	}
	v = v.Elem()
	idx, ok := portFields.Load(v.Type())
	if !ok {
		f, found := v.Type().FieldByName("Port")
		if !found || f.Type.Kind() != reflect.String {
			return fmt.Errorf("request %T has no Port field", req)
		}
		idx, _ = portFields.LoadOrStore(v.Type(), f.Index)
	}
	f, err := v.FieldByIndexErr(idx.([]int))
	if err != nil || !f.CanSet() {
		return fmt.Errorf("request %T: cannot set its Port", req)
	}
	f.SetString(port)
	return nil
}
