package kmsfake

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/kms"
)

// Op names a kms.Client method, for call counts and injected errors.
type Op string

// The operations of kms.Client.
const (
	// OpDescribeKey is kms.Client.DescribeKey.
	OpDescribeKey Op = "DescribeKey"
	// OpListKeyVersions is kms.Client.ListKeyVersions.
	OpListKeyVersions Op = "ListKeyVersions"
	// OpEncrypt is kms.Client.Encrypt.
	OpEncrypt Op = "Encrypt"
	// OpDecrypt is kms.Client.Decrypt.
	OpDecrypt Op = "Decrypt"
	// OpGenerateDataKey is kms.Client.GenerateDataKey.
	OpGenerateDataKey Op = "GenerateDataKey"
)

// blobPrefix marks the fake's ciphertext blobs.
const blobPrefix = "kmsfake1."

// Fake is an in-memory kms.Client. The zero value is not usable; call New. All methods are safe for
// concurrent use.
type Fake struct {
	// Clock stamps version creation dates (default the real clock). Set it before use; tests pass
	// a k8s.io/utils/clock/testing fake.
	Clock clock.PassiveClock

	mu      sync.Mutex
	keys    map[string]*fakeKey
	aliases map[string]string // "alias/<name>" -> key ID
	calls   map[Op]int
	queued  map[Op][]error
	sticky  map[Op]error
	hooks   map[Op]func(ctx context.Context) error
}

type fakeKey struct {
	meta     kms.KeyMetadata
	versions []kms.KeyVersion
}

var _ kms.Client = (*Fake)(nil)

// New returns a Fake without keys.
func New() *Fake {
	return &Fake{
		Clock:   clock.RealClock{},
		keys:    map[string]*fakeKey{},
		aliases: map[string]string{},
		calls:   map[Op]int{},
		queued:  map[Op][]error{},
		sticky:  map[Op]error{},
		hooks:   map[Op]func(context.Context) error{},
	}
}

// CreateKey adds an Enabled key with one version and returns that version's ID
// ("<keyID>-v1"). It panics if the key exists, which is a test bug.
func (f *Fake) CreateKey(keyID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.keys[keyID]; ok {
		panic("kmsfake: key " + keyID + " exists")
	}
	now := f.now()
	k := &fakeKey{meta: kms.KeyMetadata{
		KeyID:             keyID,
		Arn:               "acs:kms:cn-fake:0000000000000000:key/" + keyID,
		State:             kms.KeyStateEnabled,
		KeySpec:           "Aliyun_AES_256",
		KeyUsage:          "ENCRYPT/DECRYPT",
		ProtectionLevel:   "SOFTWARE",
		Origin:            "Aliyun_KMS",
		AutomaticRotation: "Disabled",
		CreationDate:      now,
	}}
	f.keys[keyID] = k
	return k.addVersion(now)
}

func (k *fakeKey) addVersion(now time.Time) string {
	id := fmt.Sprintf("%s-v%d", k.meta.KeyID, len(k.versions)+1)
	k.versions = append(k.versions, kms.KeyVersion{KeyID: k.meta.KeyID, KeyVersionID: id, CreationDate: now})
	k.meta.PrimaryKeyVersion = id
	k.meta.LastRotationDate = now
	return id
}

// Rotate adds a version to the key, makes it primary and returns its ID, like CreateKeyVersion.
func (f *Fake) Rotate(keyID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mustKey(keyID).addVersion(f.now())
}

// SetAlias points alias ("alias/<name>") at a key, as CreateAlias and UpdateAlias do; DescribeKey
// then resolves it (and an alias ARN) to that key.
func (f *Fake) SetAlias(alias, keyID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mustKey(keyID)
	f.aliases[alias] = keyID
}

// lookup finds a key by ID, alias, key ARN or alias ARN. Called with mu held.
func (f *Fake) lookup(ref string) (*fakeKey, bool) {
	if i := strings.LastIndex(ref, ":"); strings.HasPrefix(ref, "acs:kms:") && i >= 0 {
		ref = strings.TrimPrefix(ref[i+1:], "key/")
	}
	if id, ok := f.aliases[ref]; ok {
		ref = id
	}
	k, ok := f.keys[ref]
	return k, ok
}

// SetState sets the key's state (kms.KeyStateEnabled, KeyStateDisabled, KeyStatePendingDeletion...).
func (f *Fake) SetState(keyID, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.mustKey(keyID)
	k.meta.State = state
	k.meta.DeleteDate = time.Time{}
	if state == kms.KeyStatePendingDeletion {
		k.meta.DeleteDate = f.now().Add(7 * 24 * time.Hour)
	}
}

// UpdateMetadata lets a test change any metadata field (rotation policy, dates...). The key ID is
// kept.
func (f *Fake) UpdateMetadata(keyID string, update func(*kms.KeyMetadata)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.mustKey(keyID)
	update(&k.meta)
	k.meta.KeyID = keyID
}

// FailNext makes the next len(errs) calls of op fail with errs, in order, before doing anything.
func (f *Fake) FailNext(op Op, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queued[op] = append(f.queued[op], errs...)
}

// SetError makes every call of op fail with err (after the queued ones) until SetError(op, nil).
func (f *Fake) SetError(op Op, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.sticky, op)
		return
	}
	f.sticky[op] = err
}

// SetHook runs hook at the start of every call of op, outside the Fake's lock; a non-nil result
// fails the call. Tests use it to block a call until its context ends or to observe concurrency.
// A nil hook removes it.
func (f *Fake) SetHook(op Op, hook func(ctx context.Context) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if hook == nil {
		delete(f.hooks, op)
		return
	}
	f.hooks[op] = hook
}

// Calls returns how many times op was called, failures included.
func (f *Fake) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// ServiceUnavailable returns the error KMS answers when it is briefly unable to serve (503,
// retriable).
func ServiceUnavailable() error {
	return kms.NewAPIError(http.StatusServiceUnavailable, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
}

func (f *Fake) now() time.Time {
	if f.Clock == nil {
		return time.Now().UTC()
	}
	return f.Clock.Now().UTC()
}

func (f *Fake) mustKey(keyID string) *fakeKey {
	k, ok := f.keys[keyID]
	if !ok {
		panic("kmsfake: no key " + keyID)
	}
	return k
}

// begin counts the call, runs the hook and returns an injected error, if any.
func (f *Fake) begin(ctx context.Context, op Op) error {
	f.mu.Lock()
	f.calls[op]++
	hook := f.hooks[op]
	var err error
	if q := f.queued[op]; len(q) > 0 {
		err, f.queued[op] = q[0], q[1:]
	} else {
		err = f.sticky[op]
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if hook != nil {
		if err := hook(ctx); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func errKeyNotFound() error {
	return kms.NewAPIError(http.StatusNotFound, kms.CodeKeyNotFound, "The specified Key is not found.")
}

// usableKey returns the key if it exists and may be used for cryptography. f.mu must be held.
func (f *Fake) usableKey(keyID string) (*fakeKey, error) {
	k, ok := f.keys[keyID]
	if !ok {
		return nil, errKeyNotFound()
	}
	switch k.meta.State {
	case kms.KeyStateEnabled:
		return k, nil
	case kms.KeyStateDisabled:
		return nil, kms.NewAPIError(http.StatusConflict, kms.CodeKeyDisabled, "The request was rejected because the key state is Disabled.")
	case kms.KeyStatePendingDeletion:
		return nil, kms.NewAPIError(http.StatusConflict, kms.CodeKeyPendingDeletion, "The request was rejected because the key state is PendingDeletion.")
	default:
		return nil, kms.NewAPIError(http.StatusConflict, "Rejected."+k.meta.State, "The request was rejected because of the key state.")
	}
}

// DescribeKey implements kms.Client.
func (f *Fake) DescribeKey(ctx context.Context, keyID string) (kms.KeyMetadata, error) {
	if err := f.begin(ctx, OpDescribeKey); err != nil {
		return kms.KeyMetadata{}, fmt.Errorf("kms describe key %s: %w", kms.Redact(keyID), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.lookup(keyID)
	if !ok {
		return kms.KeyMetadata{}, fmt.Errorf("kms describe key %s: %w", kms.Redact(keyID), errKeyNotFound())
	}
	return k.meta, nil
}

// ListKeyVersions implements kms.Client.
func (f *Fake) ListKeyVersions(ctx context.Context, keyID string) ([]kms.KeyVersion, error) {
	if err := f.begin(ctx, OpListKeyVersions); err != nil {
		return nil, fmt.Errorf("kms list key versions %s: %w", kms.Redact(keyID), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[keyID]
	if !ok {
		return nil, fmt.Errorf("kms list key versions %s: %w", kms.Redact(keyID), errKeyNotFound())
	}
	return append([]kms.KeyVersion(nil), k.versions...), nil
}

// blob is the decoded form of a fake ciphertext.
type blob struct {
	KeyID     string            `json:"k"`
	VersionID string            `json:"v"`
	Context   map[string]string `json:"c,omitempty"`
	Plaintext []byte            `json:"p"`
}

func (f *Fake) seal(k *fakeKey, plaintext []byte, encCtx map[string]string) (string, string) {
	v := k.meta.PrimaryKeyVersion
	b, _ := json.Marshal(blob{KeyID: k.meta.KeyID, VersionID: v, Context: maps.Clone(encCtx), Plaintext: plaintext})
	return blobPrefix + base64.RawURLEncoding.EncodeToString(b), v
}

// Encrypt implements kms.Client.
func (f *Fake) Encrypt(ctx context.Context, keyID string, plaintext []byte, encCtx map[string]string) (kms.EncryptResult, error) {
	if err := f.begin(ctx, OpEncrypt); err != nil {
		return kms.EncryptResult{}, fmt.Errorf("kms encrypt with key %s: %w", kms.Redact(keyID), err)
	}
	if len(plaintext) == 0 {
		return kms.EncryptResult{}, fmt.Errorf("kms encrypt with key %s: plaintext is empty", kms.Redact(keyID))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.usableKey(keyID)
	if err != nil {
		return kms.EncryptResult{}, fmt.Errorf("kms encrypt with key %s: %w", kms.Redact(keyID), err)
	}
	b, v := f.seal(k, plaintext, encCtx)
	return kms.EncryptResult{KeyID: k.meta.KeyID, KeyVersionID: v, CiphertextBlob: b}, nil
}

// Decrypt implements kms.Client.
func (f *Fake) Decrypt(ctx context.Context, ciphertext string, encCtx map[string]string) (kms.DecryptResult, error) {
	if err := f.begin(ctx, OpDecrypt); err != nil {
		return kms.DecryptResult{}, fmt.Errorf("kms decrypt: %w", err)
	}
	invalid := kms.NewAPIError(http.StatusBadRequest, "InvalidParameter", `The specified parameter "CiphertextBlob" is not valid.`)
	raw, ok := strings.CutPrefix(ciphertext, blobPrefix)
	if !ok {
		return kms.DecryptResult{}, fmt.Errorf("kms decrypt: %w", invalid)
	}
	data, err := base64.RawURLEncoding.DecodeString(raw)
	var b blob
	if err != nil || json.Unmarshal(data, &b) != nil {
		return kms.DecryptResult{}, fmt.Errorf("kms decrypt: %w", invalid)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.usableKey(b.KeyID)
	if err != nil {
		return kms.DecryptResult{}, fmt.Errorf("kms decrypt: %w", err)
	}
	found := false
	for _, v := range k.versions {
		found = found || v.KeyVersionID == b.VersionID
	}
	if !found {
		return kms.DecryptResult{}, fmt.Errorf("kms decrypt: %w",
			kms.NewAPIError(http.StatusNotFound, kms.CodeKeyVersionNotFound, "The specified Key version is not found."))
	}
	if !maps.Equal(b.Context, encCtx) && (len(b.Context) > 0 || len(encCtx) > 0) {
		return kms.DecryptResult{}, fmt.Errorf("kms decrypt: %w", invalid)
	}
	return kms.DecryptResult{KeyID: b.KeyID, KeyVersionID: b.VersionID, Plaintext: b.Plaintext}, nil
}

// GenerateDataKey implements kms.Client.
func (f *Fake) GenerateDataKey(ctx context.Context, keyID string) (kms.DataKey, error) {
	if err := f.begin(ctx, OpGenerateDataKey); err != nil {
		return kms.DataKey{}, fmt.Errorf("kms generate data key with key %s: %w", kms.Redact(keyID), err)
	}
	dk := make([]byte, 32)
	if _, err := rand.Read(dk); err != nil {
		return kms.DataKey{}, fmt.Errorf("kms generate data key with key %s: %w", kms.Redact(keyID), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, err := f.usableKey(keyID)
	if err != nil {
		return kms.DataKey{}, fmt.Errorf("kms generate data key with key %s: %w", kms.Redact(keyID), err)
	}
	b, v := f.seal(k, dk, nil)
	return kms.DataKey{KeyID: k.meta.KeyID, KeyVersionID: v, CiphertextBlob: b, Plaintext: dk}, nil
}
