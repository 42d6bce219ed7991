package kms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkkms "github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/shared/retry"
)

// Limits of the adapter.
const (
	// listPageSize is the largest page ListKeyVersions asks for (the KMS maximum).
	listPageSize = 100
	// maxListPages bounds ListKeyVersions against a server that never stops paging.
	maxListPages = 1000
	// maxIdleSDKClients bounds the SDK clients kept between calls.
	maxIdleSDKClients = 16
	// dataKeyBytes is the size of an AES_256 data key.
	dataKeyBytes = 32
	// userAgentName tags rekey's calls in ActionTrail's userAgent.
	userAgentName = "rekey"
)

// SDKClient is the Client backed by the Alibaba Cloud SDK. It is safe for concurrent use.
//
// The SDK's *kms.Client is not: every call rewrites its http.Client timeout. SDKClient therefore
// keeps a small pool of SDK clients, each used by one call at a time, all sharing one HTTP
// transport. Each SDK client's transport is wrapped so that the call's context (with its
// CallTimeout) governs the HTTP request, which the SDK itself cannot do.
type SDKClient struct {
	cfg   Config
	base  http.RoundTripper
	owned *http.Transport // the transport made here, closed by Close; nil if cfg.Transport was given
	idle  chan *sdkConn
}

var _ Client = (*SDKClient)(nil)

// sdkConn is one SDK client and its context-binding transport.
type sdkConn struct {
	client *sdkkms.Client
	rt     *ctxTransport
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

// NewSDKClient validates cfg (see Config for defaults) and returns a client. It makes no call.
func NewSDKClient(cfg Config) (*SDKClient, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	c := &SDKClient{cfg: cfg, base: cfg.Transport, idle: make(chan *sdkConn, maxIdleSDKClients)}
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
	conn, err := c.newConn()
	if err != nil {
		return nil, err
	}
	c.idle <- conn
	return c, nil
}

// Endpoint is the KMS host[:port] the client calls.
func (c *SDKClient) Endpoint() string { return c.cfg.Endpoint }

// Scheme is "HTTPS" or "HTTP".
func (c *SDKClient) Scheme() string { return c.cfg.Scheme }

// Close releases idle connections. The client stays usable; later calls open new connections.
func (c *SDKClient) Close() error {
	if c.owned != nil {
		c.owned.CloseIdleConnections()
	} else if ci, ok := c.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
	return nil
}

func (c *SDKClient) newConn() (*sdkConn, error) {
	cr := c.cfg.Credentials
	var (
		cl  *sdkkms.Client
		err error
	)
	if cr.SecurityToken != "" {
		cl, err = sdkkms.NewClientWithStsToken(c.cfg.Region, cr.AccessKeyID, cr.AccessKeySecret, cr.SecurityToken)
	} else {
		cl, err = sdkkms.NewClientWithAccessKey(c.cfg.Region, cr.AccessKeyID, cr.AccessKeySecret)
	}
	if err != nil {
		return nil, fmt.Errorf("new kms sdk client: %w", sanitize(err))
	}
	rt := &ctxTransport{base: c.base}
	cl.SetTransport(rt)
	cl.Domain = c.cfg.Endpoint
	cl.GetConfig().WithScheme(c.cfg.Scheme)
	// Tracing spans would be named after the request URI, which carries every parameter.
	cl.SetCloseTrace(true)
	cl.AppendUserAgent(userAgentName, "kms")
	return &sdkConn{client: cl, rt: rt}, nil
}

func (c *SDKClient) acquire() (*sdkConn, error) {
	select {
	case conn := <-c.idle:
		return conn, nil
	default:
		return c.newConn()
	}
}

func (c *SDKClient) release(conn *sdkConn) {
	conn.rt.ctx = nil
	select {
	case c.idle <- conn:
	default:
	}
}

// call runs one KMS operation through retry.Do. Each attempt gets its own SDK client, a context
// bounded by CallTimeout, and request timeouts equal to what is left of that context. fn builds a
// fresh request, passes it to prepare, and sends it. refs are redacted from server messages.
func (c *SDKClient) call(ctx context.Context, op string, fn func(cl *sdkkms.Client, prepare func(requests.AcsRequest)) error, refs ...string) error {
	var notify retry.Notify
	if c.cfg.OnRetry != nil {
		notify = func(err error, wait time.Duration) { c.cfg.OnRetry(op, err, wait) }
	}
	return retry.Do(ctx, c.cfg.Retry, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		defer cancel()
		conn, err := c.acquire()
		if err != nil {
			return err
		}
		defer c.release(conn)
		conn.rt.ctx = callCtx
		prepare := func(r requests.AcsRequest) {
			r.SetScheme(c.cfg.Scheme)
			if dl, ok := callCtx.Deadline(); ok {
				left := max(time.Until(dl), time.Millisecond)
				r.SetReadTimeout(left)
				r.SetConnectTimeout(left)
			}
		}
		err = fn(conn.client, prepare)
		if err != nil && callCtx.Err() != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			// The per-call timeout fired; make sure the error says so, so it is retried.
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, sanitize(err, refs...))
			return err
		}
		return sanitize(err, refs...)
	}, notify)
}

// DescribeKey implements Client.
func (c *SDKClient) DescribeKey(ctx context.Context, keyID string) (KeyMetadata, error) {
	if keyID == "" {
		return KeyMetadata{}, errors.New("kms describe key: key ID is empty")
	}
	var resp *sdkkms.DescribeKeyResponse
	err := c.call(ctx, "DescribeKey", func(cl *sdkkms.Client, prepare func(requests.AcsRequest)) error {
		req := sdkkms.CreateDescribeKeyRequest()
		req.KeyId = keyID
		prepare(req)
		var err error
		resp, err = cl.DescribeKey(req)
		return err
	}, keyID)
	if err != nil {
		return KeyMetadata{}, fmt.Errorf("kms describe key %s: %w", Redact(keyID), err)
	}
	m := resp.KeyMetadata
	return KeyMetadata{
		KeyID:             m.KeyId,
		Arn:               m.Arn,
		State:             m.KeyState,
		KeySpec:           m.KeySpec,
		KeyUsage:          m.KeyUsage,
		ProtectionLevel:   m.ProtectionLevel,
		Origin:            m.Origin,
		Creator:           m.Creator,
		Description:       m.Description,
		DKMSInstanceID:    m.DKMSInstanceId,
		PrimaryKeyVersion: m.PrimaryKeyVersion,
		AutomaticRotation: m.AutomaticRotation,
		RotationInterval:  m.RotationInterval,
		CreationDate:      parseTime(m.CreationDate),
		LastRotationDate:  parseTime(m.LastRotationDate),
		NextRotationDate:  parseTime(m.NextRotationDate),
		DeleteDate:        parseTime(m.DeleteDate),
	}, nil
}

// ListKeyVersions implements Client. Pages are fetched one after another, each with its own
// retries.
func (c *SDKClient) ListKeyVersions(ctx context.Context, keyID string) ([]KeyVersion, error) {
	if keyID == "" {
		return nil, errors.New("kms list key versions: key ID is empty")
	}
	var out []KeyVersion
	for page := 1; page <= maxListPages; page++ {
		var resp *sdkkms.ListKeyVersionsResponse
		err := c.call(ctx, "ListKeyVersions", func(cl *sdkkms.Client, prepare func(requests.AcsRequest)) error {
			req := sdkkms.CreateListKeyVersionsRequest()
			req.KeyId = keyID
			req.PageNumber = requests.NewInteger(page)
			req.PageSize = requests.NewInteger(listPageSize)
			prepare(req)
			var err error
			resp, err = cl.ListKeyVersions(req)
			return err
		}, keyID)
		if err != nil {
			return nil, fmt.Errorf("kms list key versions %s (page %d): %w", Redact(keyID), page, err)
		}
		for _, v := range resp.KeyVersions.KeyVersion {
			out = append(out, KeyVersion{KeyID: v.KeyId, KeyVersionID: v.KeyVersionId, CreationDate: parseTime(v.CreationDate)})
		}
		if len(resp.KeyVersions.KeyVersion) == 0 || len(out) >= resp.TotalCount {
			return out, nil
		}
	}
	return nil, fmt.Errorf("kms list key versions %s: more than %d pages", Redact(keyID), maxListPages)
}

// Encrypt implements Client.
func (c *SDKClient) Encrypt(ctx context.Context, keyID string, plaintext []byte, encCtx map[string]string) (EncryptResult, error) {
	if keyID == "" {
		return EncryptResult{}, errors.New("kms encrypt: key ID is empty")
	}
	if len(plaintext) == 0 {
		return EncryptResult{}, fmt.Errorf("kms encrypt with key %s: plaintext is empty", Redact(keyID))
	}
	ec, err := encodeContext(encCtx)
	if err != nil {
		return EncryptResult{}, fmt.Errorf("kms encrypt with key %s: %w", Redact(keyID), err)
	}
	encoded := base64.StdEncoding.EncodeToString(plaintext)
	var resp *sdkkms.EncryptResponse
	err = c.call(ctx, "Encrypt", func(cl *sdkkms.Client, prepare func(requests.AcsRequest)) error {
		req := sdkkms.CreateEncryptRequest()
		req.KeyId = keyID
		req.Plaintext = encoded
		req.EncryptionContext = ec
		prepare(req)
		var err error
		resp, err = cl.Encrypt(req)
		return err
	}, keyID, encoded)
	if err != nil {
		return EncryptResult{}, fmt.Errorf("kms encrypt with key %s: %w", Redact(keyID), err)
	}
	if resp.CiphertextBlob == "" || resp.KeyVersionId == "" {
		return EncryptResult{}, fmt.Errorf("kms encrypt with key %s: response lacks CiphertextBlob or KeyVersionId", Redact(keyID))
	}
	return EncryptResult{KeyID: resp.KeyId, KeyVersionID: resp.KeyVersionId, CiphertextBlob: resp.CiphertextBlob}, nil
}

// Decrypt implements Client.
func (c *SDKClient) Decrypt(ctx context.Context, blob string, encCtx map[string]string) (DecryptResult, error) {
	if blob == "" {
		return DecryptResult{}, errors.New("kms decrypt: ciphertext blob is empty")
	}
	ec, err := encodeContext(encCtx)
	if err != nil {
		return DecryptResult{}, fmt.Errorf("kms decrypt: %w", err)
	}
	var resp *sdkkms.DecryptResponse
	err = c.call(ctx, "Decrypt", func(cl *sdkkms.Client, prepare func(requests.AcsRequest)) error {
		req := sdkkms.CreateDecryptRequest()
		req.CiphertextBlob = blob
		req.EncryptionContext = ec
		prepare(req)
		var err error
		resp, err = cl.Decrypt(req)
		return err
	}, blob)
	if err != nil {
		return DecryptResult{}, fmt.Errorf("kms decrypt: %w", err)
	}
	pt, err := base64.StdEncoding.DecodeString(resp.Plaintext)
	if err != nil {
		return DecryptResult{}, fmt.Errorf("kms decrypt with key %s: plaintext is not base64 (the blob was not made by this client's Encrypt)",
			Redact(resp.KeyId))
	}
	return DecryptResult{KeyID: resp.KeyId, KeyVersionID: resp.KeyVersionId, Plaintext: pt}, nil
}

// GenerateDataKey implements Client.
func (c *SDKClient) GenerateDataKey(ctx context.Context, keyID string) (DataKey, error) {
	if keyID == "" {
		return DataKey{}, errors.New("kms generate data key: key ID is empty")
	}
	var resp *sdkkms.GenerateDataKeyResponse
	err := c.call(ctx, "GenerateDataKey", func(cl *sdkkms.Client, prepare func(requests.AcsRequest)) error {
		req := sdkkms.CreateGenerateDataKeyRequest()
		req.KeyId = keyID
		req.KeySpec = "AES_256"
		prepare(req)
		var err error
		resp, err = cl.GenerateDataKey(req)
		return err
	}, keyID)
	if err != nil {
		return DataKey{}, fmt.Errorf("kms generate data key with key %s: %w", Redact(keyID), err)
	}
	pt, err := base64.StdEncoding.DecodeString(resp.Plaintext)
	if err != nil || len(pt) != dataKeyBytes {
		return DataKey{}, fmt.Errorf("kms generate data key with key %s: response plaintext is not a base64 %d-byte key",
			Redact(keyID), dataKeyBytes)
	}
	if resp.CiphertextBlob == "" || resp.KeyVersionId == "" {
		return DataKey{}, fmt.Errorf("kms generate data key with key %s: response lacks CiphertextBlob or KeyVersionId", Redact(keyID))
	}
	return DataKey{KeyID: resp.KeyId, KeyVersionID: resp.KeyVersionId, CiphertextBlob: resp.CiphertextBlob, Plaintext: pt}, nil
}

// encodeContext renders an encryption context as the JSON object KMS expects ("" for none).
func encodeContext(encCtx map[string]string) (string, error) {
	if len(encCtx) == 0 {
		return "", nil
	}
	b, err := json.Marshal(encCtx) // keys sorted: the same map always gives the same string
	if err != nil {
		return "", fmt.Errorf("encode encryption context: %w", err)
	}
	return string(b), nil
}
