package kms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkkms "github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Limits of the adapter.
const (
	// listPageSize is the largest page ListKeyVersions asks for (the KMS maximum).
	listPageSize = 100
	// maxListPages bounds ListKeyVersions against a server that never stops paging.
	maxListPages = 1000
	// dataKeyBytes is the size of an AES_256 data key.
	dataKeyBytes = 32
)

// SDKClient is the Client backed by the Alibaba Cloud SDK, through an alicloud.Client (one SDK
// client construction for every product). It is safe for concurrent use.
type SDKClient struct {
	cfg Config
	api *alicloud.Client
}

var _ Client = (*SDKClient)(nil)

// NewSDKClient validates cfg (see Config for defaults) and returns a client. It makes no call.
func NewSDKClient(cfg Config) (*SDKClient, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	api, err := alicloud.New(cfg.sdkConfig())
	if err != nil {
		return nil, err
	}
	return &SDKClient{cfg: cfg, api: api}, nil
}

// Endpoint is the KMS host[:port] the client calls.
func (c *SDKClient) Endpoint() string { return c.cfg.Endpoint }

// Scheme is "HTTPS" or "HTTP".
func (c *SDKClient) Scheme() string { return c.cfg.Scheme }

// CredentialsSource says where the client's credentials come from (never the credentials).
func (c *SDKClient) CredentialsSource() string { return c.api.CredentialsSource() }

// Close releases idle connections. The client stays usable; later calls open new connections.
func (c *SDKClient) Close() error { return c.api.Close() }

// call runs one KMS operation through retry.Do; each attempt is one alicloud.Client.Do, bounded by
// CallTimeout. send builds a fresh request and response and sends them with do.
func (c *SDKClient) call(ctx context.Context, op string, send func(ctx context.Context) error) error {
	var notify retry.Notify
	if c.cfg.OnRetry != nil {
		notify = func(err error, wait time.Duration) { c.cfg.OnRetry(op, err, wait) }
	}
	return retry.Do(ctx, c.cfg.Retry, send, notify)
}

// DescribeKey implements Client.
func (c *SDKClient) DescribeKey(ctx context.Context, keyID string) (KeyMetadata, error) {
	if keyID == "" {
		return KeyMetadata{}, errors.New("kms describe key: key ID is empty")
	}
	var resp *sdkkms.DescribeKeyResponse
	err := c.call(ctx, "DescribeKey", func(ctx context.Context) error {
		req := sdkkms.CreateDescribeKeyRequest()
		req.KeyId = keyID
		resp = sdkkms.CreateDescribeKeyResponse()
		return c.api.Do(ctx, req, resp, keyID)
	})
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
		err := c.call(ctx, "ListKeyVersions", func(ctx context.Context) error {
			req := sdkkms.CreateListKeyVersionsRequest()
			req.KeyId = keyID
			req.PageNumber = requests.NewInteger(page)
			req.PageSize = requests.NewInteger(listPageSize)
			resp = sdkkms.CreateListKeyVersionsResponse()
			return c.api.Do(ctx, req, resp, keyID)
		})
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
	err = c.call(ctx, "Encrypt", func(ctx context.Context) error {
		req := sdkkms.CreateEncryptRequest()
		req.KeyId = keyID
		req.Plaintext = encoded
		req.EncryptionContext = ec
		resp = sdkkms.CreateEncryptResponse()
		return c.api.Do(ctx, req, resp, keyID, encoded)
	})
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
	err = c.call(ctx, "Decrypt", func(ctx context.Context) error {
		req := sdkkms.CreateDecryptRequest()
		req.CiphertextBlob = blob
		req.EncryptionContext = ec
		resp = sdkkms.CreateDecryptResponse()
		return c.api.Do(ctx, req, resp, blob)
	})
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
	err := c.call(ctx, "GenerateDataKey", func(ctx context.Context) error {
		req := sdkkms.CreateGenerateDataKeyRequest()
		req.KeyId = keyID
		req.KeySpec = "AES_256"
		resp = sdkkms.CreateGenerateDataKeyResponse()
		return c.api.Do(ctx, req, resp, keyID)
	})
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
