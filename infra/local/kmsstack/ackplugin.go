package kmsstack

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/kms/pkg/service"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

// An ACK-like KMS v2 plugin, for the twin only. On ACK every kube-apiserver replica has its own
// managed KMS plugin whose key_id format is undocumented and whose Status poll runs on its own
// schedule, so the replicas adopt a new key version at different moments. ACKPlugin wraps rekey's
// own kmsplugin.Service to reproduce that, so that no rekey code can get away with assuming that
// key_id == key version ID or that every API server adopts a rotation at once.

// KeyIDFormat is how an ACKPlugin spells the KMS v2 key_id of a key version.
type KeyIDFormat int

const (
	// KeyIDVersion reports the bare KMS key version ID as the key_id, as rekey's own plugin does.
	KeyIDVersion KeyIDFormat = iota
	// KeyIDOpaque reports an opaque string derived from the KMS key ID and the version ID
	// (OpaqueKeyIDPrefix + base64url(keyID + "/" + versionID)), never equal to the version ID.
	// Only ACKPlugin maps it back; rekey must treat it as an opaque label.
	KeyIDOpaque
)

// String names the format ("version" or "opaque").
func (f KeyIDFormat) String() string {
	switch f {
	case KeyIDVersion:
		return "version"
	case KeyIDOpaque:
		return "opaque"
	default:
		return fmt.Sprintf("KeyIDFormat(%d)", int(f))
	}
}

// OpaqueKeyIDPrefix starts every KeyIDOpaque key_id.
const OpaqueKeyIDPrefix = "ackkms-"

// ACKPluginOptions configure an ACKPlugin; the zero value is a pass-through of the inner
// Service (key_id = version ID, new versions adopted at once).
type ACKPluginOptions struct {
	// KeyIDFormat is the key_id format of Status and Encrypt (default KeyIDVersion).
	KeyIDFormat KeyIDFormat
	// AdoptAfter is how long after the plugin first sees a new primary version (in its own
	// Status or Watch) Status keeps reporting the previous key_id. Zero adopts at once.
	AdoptAfter time.Duration
	// Clock measures AdoptAfter and drives Watch (default the real clock); tests pass a fake.
	Clock clock.WithTicker
}

// ACKPlugin is a k8s.io/kms service.Service wrapping rekey's kmsplugin.Service like an ACK
// managed plugin: its key_id format is configurable (ACKPluginOptions.KeyIDFormat), it adopts a
// new key version only AdoptAfter after it first sees it, and Freeze holds its Status on the key_id
// it reports now. kube-apiserver calls Encrypt for a new DEK only when Status reports a key_id
// other than its current DEK's, so an ACKPlugin whose Status lags keeps its API server writing
// under the previous version. It is safe for concurrent use.
type ACKPlugin struct {
	inner *kmsplugin.Service
	keyID string
	opts  ACKPluginOptions

	mu           sync.Mutex // guards the fields below
	reported     string     // the version whose key_id Status reports ("" until the first one)
	pending      string     // the newest version seen that is not reported yet ("" none)
	pendingSince time.Time  // when a version other than reported was first seen
	frozen       bool
}

var _ service.Service = (*ACKPlugin)(nil)

// NewACKPlugin wraps inner, a plugin for the KMS key keyID. keyID must be the key's ID (not an
// alias or ARN): it goes into KeyIDOpaque key_ids.
func NewACKPlugin(inner *kmsplugin.Service, keyID string, opts ACKPluginOptions) (*ACKPlugin, error) {
	if inner == nil {
		return nil, errors.New("ack plugin: an inner kmsplugin.Service is required")
	}
	if keyID == "" {
		return nil, errors.New("ack plugin: a KMS key ID is required")
	}
	if opts.KeyIDFormat != KeyIDVersion && opts.KeyIDFormat != KeyIDOpaque {
		return nil, fmt.Errorf("ack plugin: unknown key_id format %v", opts.KeyIDFormat)
	}
	if opts.AdoptAfter < 0 {
		return nil, fmt.Errorf("ack plugin: AdoptAfter %v is negative", opts.AdoptAfter)
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &ACKPlugin{inner: inner, keyID: keyID, opts: opts}, nil
}

// KeyIDFor is the key_id this plugin reports and writes for the key version version ("" for "").
func (p *ACKPlugin) KeyIDFor(version string) string {
	return formatKeyID(p.opts.KeyIDFormat, p.keyID, version)
}

// formatKeyID spells version's key_id in format f for the key keyID.
func formatKeyID(f KeyIDFormat, keyID, version string) string {
	if version == "" || f != KeyIDOpaque {
		return version
	}
	return OpaqueKeyIDPrefix + base64.RawURLEncoding.EncodeToString([]byte(keyID+"/"+version))
}

// versionOf maps a key_id back to the key version ID. Both formats are accepted whatever this
// plugin's own format, as the API servers of one cluster read each other's writes: a key_id
// without OpaqueKeyIDPrefix is a bare version ID.
func versionOf(keyID string) (string, error) {
	rest, ok := strings.CutPrefix(keyID, OpaqueKeyIDPrefix)
	if !ok {
		return keyID, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return "", fmt.Errorf("opaque key_id %s is not base64url: %w", kms.Redact(keyID), err)
	}
	key, version, ok := strings.Cut(string(raw), "/")
	if !ok || key == "" || version == "" {
		return "", fmt.Errorf("opaque key_id %s does not name a key and a version", kms.Redact(keyID))
	}
	return version, nil
}

// Freeze holds Status on the key_id it reports now (frozen) or lets it follow KMS again. While
// frozen, new versions are still noticed: after Freeze(false) one that was first seen at least
// AdoptAfter earlier is adopted by the next Status. A plugin that has reported no version yet
// adopts the first one even when frozen (there is no previous key_id to hold).
func (p *ACKPlugin) Freeze(frozen bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = frozen
}

// adoptLocked takes note of the inner Status's version and returns the version to report.
// p.mu must be held.
func (p *ACKPlugin) adoptLocked(version string, now time.Time) string {
	switch {
	case version == "":
		// The inner plugin knows no version (KMS never answered): nothing to adopt.
	case p.reported == "":
		p.reported = version
	case version == p.reported:
		p.pending, p.pendingSince = "", time.Time{}
	default:
		if p.pending == "" {
			p.pendingSince = now
		}
		p.pending = version
		if !p.frozen && now.Sub(p.pendingSince) >= p.opts.AdoptAfter {
			p.reported, p.pending, p.pendingSince = version, "", time.Time{}
		}
	}
	return p.reported
}

// Status implements service.Service: the inner Status (healthz and version), with the key_id of
// the version this plugin has adopted.
func (p *ACKPlugin) Status(ctx context.Context) (*service.StatusResponse, error) {
	st, err := p.inner.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("ack plugin status: %w", err)
	}
	p.mu.Lock()
	version := p.adoptLocked(st.KeyID, p.opts.Clock.Now())
	p.mu.Unlock()
	out := *st
	out.KeyID = p.KeyIDFor(version)
	return &out, nil
}

// Watch calls Status every interval until ctx ends, so that AdoptAfter counts from when the
// plugin's own poll sees a new version, not from the API server's next Status call. It does not
// refresh the inner Service: run its Watch too.
func (p *ACKPlugin) Watch(ctx context.Context, interval time.Duration) {
	_, _ = p.Status(ctx) // the inner Status never fails
	t := p.opts.Clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			_, _ = p.Status(ctx)
		}
	}
}

// Encrypt implements service.Service: the inner Encrypt (under KMS's primary version), with the
// key_id of the version actually used. That is the key_id Status reports when the API server asks
// for a DEK after Status changed; when KMS's primary has moved on since, the key_ids differ and the
// API server refuses the DEK and asks again later, as with a real plugin.
func (p *ACKPlugin) Encrypt(ctx context.Context, uid string, data []byte) (*service.EncryptResponse, error) {
	resp, err := p.inner.Encrypt(ctx, uid, data)
	if err != nil {
		return nil, fmt.Errorf("ack plugin: %w", err)
	}
	out := *resp
	out.KeyID = p.KeyIDFor(resp.KeyID)
	if len(out.KeyID) > kmsplugin.MaxKeyIDBytes {
		return nil, fmt.Errorf("ack plugin encrypt (uid %s): key_id is %d bytes, the KMS v2 limit is %d",
			uid, len(out.KeyID), kmsplugin.MaxKeyIDBytes)
	}
	return &out, nil
}

// Decrypt implements service.Service: the inner Decrypt with the request's key_id mapped back to
// the version ID (the inner Service checks it, and the annotations, against the ciphertext).
func (p *ACKPlugin) Decrypt(ctx context.Context, uid string, req *service.DecryptRequest) ([]byte, error) {
	if req == nil {
		return nil, fmt.Errorf("ack plugin decrypt (uid %s): no request", uid)
	}
	version, err := versionOf(req.KeyID)
	if err != nil {
		return nil, fmt.Errorf("ack plugin decrypt (uid %s): %w", uid, err)
	}
	r := *req
	r.KeyID = version
	plain, err := p.inner.Decrypt(ctx, uid, &r)
	if err != nil {
		return nil, fmt.Errorf("ack plugin: %w", err)
	}
	return plain, nil
}
