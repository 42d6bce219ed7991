package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/kms/pkg/service"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Protocol constants.
const (
	// AnnotationKeyID is the EncryptResponse annotation carrying the KMS key ID. KMS v2 requires
	// annotation keys to be fully qualified domain names.
	AnnotationKeyID = "key-id.kms.alibabacloud.com"
	// HealthzOK is the healthz of a usable key.
	HealthzOK = "ok"
	// MaxCiphertextBytes is the KMS v2 bound on a ciphertext (the API server's
	// encryptedDEKSourceMaxSize): 1024 bytes are accepted, 1025 refused.
	MaxCiphertextBytes = 1024
	// MaxKeyIDBytes is the KMS v2 bound on a key_id (the API server's KeyIDMaxSize).
	MaxKeyIDBytes = 1024
	// apiVersion is the KMS plugin API version reported by Status.
	apiVersion = "v2"
)

// Defaults for zero ServiceOptions fields.
const (
	// DefaultStatusInterval is how often the key status is refreshed.
	DefaultStatusInterval = 10 * time.Second
	// DefaultRefreshTimeout bounds one refresh.
	DefaultRefreshTimeout = 5 * time.Second
	// DefaultHealthGracePeriod is how long Status keeps reporting "ok" while KMS is unreachable,
	// counted from the last successful KMS call. Every API server polls Status (every 10 s while
	// unhealthy) and fails its readyz on a bad answer: without a grace period a short KMS blip
	// takes every API server out of its load balancer at once.
	DefaultHealthGracePeriod = 45 * time.Second
)

// ServiceOptions are a Service's optional knobs.
type ServiceOptions struct {
	// StatusInterval is how often Watch refreshes the key status (default DefaultStatusInterval).
	// The API server polls Status every minute when healthy and every 10 seconds when not.
	StatusInterval time.Duration
	// RefreshTimeout bounds one refresh, retries included (default DefaultRefreshTimeout).
	RefreshTimeout time.Duration
	// HealthGracePeriod is how long after the last successful KMS call Status keeps reporting
	// "ok" while KMS is unreachable (transport faults, timeouts, throttling, 5xx) (default
	// DefaultHealthGracePeriod; negative: report at once). Definite problems (key disabled,
	// pending deletion or not found, access denied) are reported at once.
	HealthGracePeriod time.Duration
	// Clock drives the refresh ticker, cache ages and the grace period (default the real clock);
	// tests pass a fake.
	Clock clock.WithTicker
	// EncryptionContext, when set, is sent with every Encrypt and Decrypt. It binds the plugin's
	// ciphertexts to it: it must never change while data encrypted under it exists.
	EncryptionContext map[string]string
	// Logger receives the plugin's events (default: disabled).
	Logger *zerolog.Logger
}

// Service is a KMS v2 plugin service for one KMS key. It is safe for concurrent use.
type Service struct {
	client kms.Client
	keyID  string
	opts   ServiceOptions
	log    zerolog.Logger

	refreshMu sync.Mutex // one DescribeKey refresh at a time

	mu      sync.Mutex // guards the fields below
	seq     uint64     // numbers KMS calls in the order they start
	current status
}

var _ service.Service = (*Service)(nil)

// status is the cached answer to Status.
type status struct {
	keyVersion  string    // last known primary key version ("" until one is known)
	versionSeq  uint64    // seq of the call that reported keyVersion
	healthz     string    // HealthzOK or the problem ("" until the first refresh)
	checked     time.Time // when the last refresh finished
	lastSuccess time.Time // when a KMS call last succeeded (zero: never)
	// unreachable is the problem of the last refresh while KMS is unreachable and healthz is
	// still HealthzOK: Status reports it once the grace period after lastSuccess is over.
	unreachable string
	// graceOver is set once Status has reported unreachable (logged once).
	graceOver bool
}

// NewService returns a Service for keyID (a key ID, alias or ARN) that calls KMS through client.
func NewService(client kms.Client, keyID string, opts ServiceOptions) (*Service, error) {
	if client == nil {
		return nil, errors.New("kms plugin: a kms client is required")
	}
	if keyID == "" {
		return nil, errors.New("kms plugin: a key ID is required")
	}
	if opts.StatusInterval < 0 || opts.RefreshTimeout < 0 {
		return nil, errors.New("kms plugin: intervals must not be negative")
	}
	if opts.HealthGracePeriod == 0 {
		opts.HealthGracePeriod = DefaultHealthGracePeriod
	}
	if opts.StatusInterval == 0 {
		opts.StatusInterval = DefaultStatusInterval
	}
	if opts.RefreshTimeout == 0 {
		opts.RefreshTimeout = DefaultRefreshTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	opts.EncryptionContext = maps.Clone(opts.EncryptionContext)
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	log = log.With().Str("kms_key", kms.Redact(keyID)).Logger()
	return &Service{client: client, keyID: keyID, opts: opts, log: log}, nil
}

// nextSeq numbers a KMS call about to start.
func (s *Service) nextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return s.seq
}

// observeVersionLocked records a primary key version reported by the call numbered seq, unless a
// call that started later already reported one. s.mu must be held.
func (s *Service) observeVersionLocked(version string, seq uint64, source string) {
	if version == "" || seq < s.current.versionSeq {
		return
	}
	old := s.current.keyVersion
	s.current.keyVersion, s.current.versionSeq = version, seq
	if old != version {
		s.log.Info().Str("old_key_version", kms.Redact(old)).Str("key_version", kms.Redact(version)).
			Str("source", source).Msg("kms key version changed")
	}
}

// Refresh asks KMS for the key's state and primary version and updates the cached status. It
// returns an error when the key is not usable (the same problem Status reports). When ctx ends
// during the call, the cache is left as it was.
func (s *Service) Refresh(ctx context.Context) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	seq := s.nextSeq()
	callCtx, cancel := context.WithTimeout(ctx, s.opts.RefreshTimeout)
	defer cancel()
	md, err := s.client.DescribeKey(callCtx, s.keyID)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("refresh kms key status: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.current.healthz
	now := s.opts.Clock.Now()
	s.current.checked = now
	var problem error
	transient := false
	switch {
	case err != nil:
		problem = fmt.Errorf("%s: %w", describeFailure(err), err)
		transient = retry.Classify(err) == retry.Retriable
	case md.State != kms.KeyStateEnabled:
		msg := fmt.Sprintf("kms key %s is %s: encrypt and decrypt are refused", kms.Redact(s.keyID), md.State)
		if md.State == kms.KeyStatePendingDeletion && !md.DeleteDate.IsZero() {
			msg += fmt.Sprintf(" (deletion scheduled for %s)", md.DeleteDate.UTC().Format(time.RFC3339))
		}
		problem = errors.New(msg)
	case md.PrimaryKeyVersion == "":
		problem = fmt.Errorf("kms key %s reports no primary key version (is it a symmetric key?)", kms.Redact(s.keyID))
	default:
		s.observeVersionLocked(md.PrimaryKeyVersion, seq, "describe key")
	}
	if problem != nil {
		if transient && before == HealthzOK && s.withinGraceLocked(now) {
			// A blip: keep answering ok until the grace period is over (Status decides).
			if s.current.unreachable == "" {
				s.log.Warn().Str("problem", problem.Error()).Dur("grace_period", s.opts.HealthGracePeriod).
					Msg("kms unreachable; status stays ok during the grace period")
			}
			s.current.unreachable = problem.Error()
			return problem
		}
		s.current.healthz, s.current.unreachable, s.current.graceOver = problem.Error(), "", false
		if s.current.healthz != before {
			s.log.Warn().Str("healthz", s.current.healthz).Str("key_version", kms.Redact(s.current.keyVersion)).
				Msg("kms key is not usable")
		}
		return problem
	}
	s.current.lastSuccess = now
	wasDown := before != HealthzOK || s.current.graceOver
	s.current.healthz, s.current.unreachable, s.current.graceOver = HealthzOK, "", false
	if wasDown {
		s.log.Info().Str("key_version", kms.Redact(s.current.keyVersion)).Msg("kms key is usable")
	}
	return nil
}

// withinGraceLocked reports whether now is within the grace period after the last successful
// KMS call. s.mu must be held.
func (s *Service) withinGraceLocked(now time.Time) bool {
	return s.opts.HealthGracePeriod > 0 && !s.current.lastSuccess.IsZero() &&
		now.Sub(s.current.lastSuccess) <= s.opts.HealthGracePeriod
}

// healthzLocked is the healthz to report now: the cached one, or the unreachable problem once
// the grace period is over. s.mu must be held.
func (s *Service) healthzLocked(now time.Time) string {
	if s.current.unreachable == "" {
		return s.current.healthz
	}
	if s.withinGraceLocked(now) {
		return HealthzOK
	}
	if !s.current.graceOver {
		s.current.graceOver = true
		s.log.Warn().Str("healthz", s.current.unreachable).Dur("grace_period", s.opts.HealthGracePeriod).
			Msg("kms still unreachable after the grace period: status reports it")
	}
	return s.current.unreachable
}

// succeeded records a successful KMS call (Encrypt, Decrypt): proof that KMS is reachable.
func (s *Service) succeeded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current.lastSuccess = s.opts.Clock.Now()
}

// describeFailure names the kind of DescribeKey failure for healthz.
func describeFailure(err error) string {
	switch {
	case kms.IsKeyNotFound(err):
		return "kms key not found"
	case retry.Classify(err) == retry.Denied:
		return "kms access denied (the plugin's RAM identity needs kms:DescribeKey, kms:Encrypt, kms:Decrypt)"
	case retry.Classify(err) == retry.Retriable:
		return "kms unreachable"
	default:
		return "kms describe key failed"
	}
}

// Watch refreshes the status every StatusInterval until ctx ends (and once at the start if it was
// never refreshed). Run starts it; a caller that serves the Service itself should too.
func (s *Service) Watch(ctx context.Context) {
	if s.snapshot().checked.IsZero() {
		_ = s.Refresh(ctx)
	}
	t := s.opts.Clock.NewTicker(s.opts.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			_ = s.Refresh(ctx)
		}
	}
}

func (s *Service) snapshot() status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Status implements service.Service. It answers from the cache; only when the cache was never
// filled, or is much older than StatusInterval (Watch is not running), does it call KMS, within
// ctx. It never returns an error: problems are reported in Healthz, KMS being unreachable only
// once HealthGracePeriod has passed since the last successful KMS call.
func (s *Service) Status(ctx context.Context) (*service.StatusResponse, error) {
	st := s.snapshot()
	stale := st.checked.IsZero() || s.opts.Clock.Since(st.checked) > 2*s.opts.StatusInterval+s.opts.RefreshTimeout
	if stale {
		_ = s.Refresh(ctx)
	}
	s.mu.Lock()
	healthz := s.healthzLocked(s.opts.Clock.Now())
	st = s.current
	s.mu.Unlock()
	if healthz == "" {
		healthz = "kms key status unknown: the first DescribeKey has not completed"
	}
	return &service.StatusResponse{Version: apiVersion, Healthz: healthz, KeyID: st.keyVersion}, nil
}

// Encrypt implements service.Service: KMS Encrypt of data (the API server's DEK or seed) under the
// key's primary version.
func (s *Service) Encrypt(ctx context.Context, uid string, data []byte) (*service.EncryptResponse, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("kms plugin encrypt (uid %s): plaintext is empty", uid)
	}
	start := s.opts.Clock.Now()
	seq := s.nextSeq()
	res, err := s.client.Encrypt(ctx, s.keyID, data, s.opts.EncryptionContext)
	if err != nil {
		s.log.Warn().Str("op", "encrypt").Str("uid", uid).Err(err).Msg("kms encrypt failed")
		return nil, fmt.Errorf("kms plugin encrypt (uid %s): %w", uid, err)
	}
	s.mu.Lock()
	s.current.lastSuccess = s.opts.Clock.Now()
	s.observeVersionLocked(res.KeyVersionID, seq, "encrypt")
	s.mu.Unlock()
	ciphertext := []byte(res.CiphertextBlob)
	if len(ciphertext) > MaxCiphertextBytes {
		return nil, fmt.Errorf("kms plugin encrypt (uid %s): ciphertext is %d bytes, the KMS v2 limit is %d",
			uid, len(ciphertext), MaxCiphertextBytes)
	}
	if len(res.KeyVersionID) > MaxKeyIDBytes {
		return nil, fmt.Errorf("kms plugin encrypt (uid %s): key version ID is %d bytes, the KMS v2 key_id limit is %d",
			uid, len(res.KeyVersionID), MaxKeyIDBytes)
	}
	s.log.Debug().Str("op", "encrypt").Str("uid", uid).Str("key_version", kms.Redact(res.KeyVersionID)).
		Dur("took", s.opts.Clock.Since(start)).Msg("encrypted DEK")
	return &service.EncryptResponse{
		Ciphertext:  ciphertext,
		KeyID:       res.KeyVersionID,
		Annotations: map[string][]byte{AnnotationKeyID: []byte(res.KeyID)},
	}, nil
}

// Decrypt implements service.Service: KMS Decrypt of the ciphertext, which must have been made by
// the key version the request names.
func (s *Service) Decrypt(ctx context.Context, uid string, req *service.DecryptRequest) ([]byte, error) {
	if req == nil || len(req.Ciphertext) == 0 {
		return nil, fmt.Errorf("kms plugin decrypt (uid %s): ciphertext is empty", uid)
	}
	if req.KeyID == "" {
		return nil, fmt.Errorf("kms plugin decrypt (uid %s): key_id is empty", uid)
	}
	if len(req.Ciphertext) > MaxCiphertextBytes {
		return nil, fmt.Errorf("kms plugin decrypt (uid %s): ciphertext is %d bytes, the KMS v2 limit is %d",
			uid, len(req.Ciphertext), MaxCiphertextBytes)
	}
	start := s.opts.Clock.Now()
	res, err := s.client.Decrypt(ctx, string(req.Ciphertext), s.opts.EncryptionContext)
	if err != nil {
		s.log.Warn().Str("op", "decrypt").Str("uid", uid).Str("key_version", kms.Redact(req.KeyID)).Err(err).
			Msg("kms decrypt failed")
		return nil, fmt.Errorf("kms plugin decrypt (uid %s): %w", uid, err)
	}
	s.succeeded()
	if res.KeyVersionID != req.KeyID {
		s.log.Warn().Str("op", "decrypt").Str("uid", uid).Str("key_version", kms.Redact(req.KeyID)).
			Str("blob_key_version", kms.Redact(res.KeyVersionID)).Msg("ciphertext and key_id disagree")
		return nil, fmt.Errorf("kms plugin decrypt (uid %s): the ciphertext was made by key version %s, the request names %s",
			uid, kms.Redact(res.KeyVersionID), kms.Redact(req.KeyID))
	}
	if want, ok := req.Annotations[AnnotationKeyID]; ok && string(want) != res.KeyID {
		return nil, fmt.Errorf("kms plugin decrypt (uid %s): the ciphertext was made by key %s, the annotation names %s",
			uid, kms.Redact(res.KeyID), kms.Redact(string(want)))
	}
	s.log.Debug().Str("op", "decrypt").Str("uid", uid).Str("key_version", kms.Redact(res.KeyVersionID)).
		Dur("took", s.opts.Clock.Since(start)).Msg("decrypted DEK")
	return res.Plaintext, nil
}
