package kmsapi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Key states, as DescribeKey reports them.
const (
	stateEnabled         = "Enabled"
	stateDisabled        = "Disabled"
	statePendingDeletion = "PendingDeletion"
)

// stateFormat is the version of the state file layout.
const stateFormat = 1

// keyVersion is one version of a key: an independent AES key.
type keyVersion struct {
	ID       string    `json:"keyVersionId"`
	Created  time.Time `json:"creationDate"`
	Material []byte    `json:"material"`
}

// key is a symmetric KMS key.
type key struct {
	ID               string        `json:"keyId"`
	Description      string        `json:"description"`
	KeySpec          string        `json:"keySpec"`
	KeyUsage         string        `json:"keyUsage"`
	ProtectionLevel  string        `json:"protectionLevel"`
	Origin           string        `json:"origin"`
	Creator          string        `json:"creator"`
	State            string        `json:"keyState"`
	Created          time.Time     `json:"creationDate"`
	DeleteDate       time.Time     `json:"deleteDate,omitzero"`
	Primary          string        `json:"primaryKeyVersion"`
	Versions         []*keyVersion `json:"versions"`
	AutoRotation     bool          `json:"automaticRotation"`
	RotationInterval time.Duration `json:"rotationInterval"`
	LastRotation     time.Time     `json:"lastRotationDate"`
}

func (k *key) version(id string) *keyVersion {
	for _, v := range k.Versions {
		if v.ID == id {
			return v
		}
	}
	return nil
}

func (k *key) primary() *keyVersion { return k.version(k.Primary) }

// nextRotation is when automatic rotation is next due (zero if disabled).
func (k *key) nextRotation() time.Time {
	if !k.AutoRotation || k.RotationInterval <= 0 {
		return time.Time{}
	}
	return k.LastRotation.Add(k.RotationInterval)
}

// materialSize returns the AES key size of a key spec.
func materialSize(spec string) int {
	switch spec {
	case "Aliyun_AES_128":
		return 16
	case "Aliyun_AES_192":
		return 24
	default:
		return 32
	}
}

// addVersion creates a fresh primary version at now.
func (k *key) addVersion(now time.Time) (*keyVersion, error) {
	material := make([]byte, materialSize(k.KeySpec))
	if _, err := io.ReadFull(rand.Reader, material); err != nil {
		return nil, fmt.Errorf("generate key material: %w", err)
	}
	id, err := newUUID()
	if err != nil {
		return nil, err
	}
	v := &keyVersion{ID: id, Created: now.UTC(), Material: material}
	k.Versions = append(k.Versions, v)
	k.Primary = v.ID
	k.LastRotation = v.Created
	return v, nil
}

// state is everything the server persists.
type state struct {
	Format  int               `json:"format"`
	Keys    []*key            `json:"keys"`
	Aliases map[string]string `json:"aliases"` // "alias/name" -> key ID
}

func newState() *state { return &state{Format: stateFormat, Aliases: map[string]string{}} }

func (st *state) key(id string) *key {
	for _, k := range st.Keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// removeKey deletes a key and every alias bound to it.
func (st *state) removeKey(id string) {
	keys := st.Keys[:0]
	for _, k := range st.Keys {
		if k.ID != id {
			keys = append(keys, k)
		}
	}
	st.Keys = keys
	for name, kid := range st.Aliases {
		if kid == id {
			delete(st.Aliases, name)
		}
	}
}

// loadState reads the state file; a missing file is an empty state.
func loadState(path string) (*state, error) {
	if path == "" {
		return newState(), nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read kms state: %w", err)
	}
	st := newState()
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("decode kms state %s: %w", filepath.Base(path), err)
	}
	if st.Format != stateFormat {
		return nil, fmt.Errorf("decode kms state %s: unsupported format %d", filepath.Base(path), st.Format)
	}
	if st.Aliases == nil {
		st.Aliases = map[string]string{}
	}
	for _, k := range st.Keys {
		if k.primary() == nil {
			return nil, fmt.Errorf("decode kms state %s: a key has no primary version", filepath.Base(path))
		}
		for _, v := range k.Versions {
			if n := len(v.Material); n != 16 && n != 24 && n != 32 {
				return nil, fmt.Errorf("decode kms state %s: a key version has %d bytes of material", filepath.Base(path), n)
			}
		}
	}
	return st, nil
}

// saveState writes the state atomically: a temporary file in the same
// directory, synced, then renamed over the target. The file is mode 0600.
func saveState(path string, st *state) (err error) {
	if path == "" {
		return nil
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode kms state: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save kms state: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("save kms state: %w", err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("save kms state: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("save kms state: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("save kms state: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save kms state: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // best effort: make the rename durable
		_ = d.Close()
	}
	return nil
}

// newUUID returns a random (version 4) UUID in lower case.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return "", fmt.Errorf("generate id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}
