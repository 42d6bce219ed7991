package controlplane

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Provider is one entry of an EncryptionConfiguration providers list. Build one with Identity,
// AESCBC, AESGCM, Secretbox or KMSv2; the first provider of a list encrypts new writes, all of
// them are tried on reads.
type Provider interface {
	// providerYAML returns the entry's YAML (a mapping with one key, not indented), or an
	// error when the entry would be rejected by kube-apiserver.
	providerYAML() (string, error)
}

// Key is a named static key for the aescbc, aesgcm and secretbox providers. The name appears
// in stored values (for example "k8s:enc:aescbc:v1:<name>:").
type Key struct {
	Name   string
	Secret []byte
}

// NewKey returns a Key named name with a random 32-byte secret, valid for every static-key
// provider.
func NewKey(name string) Key {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // crypto/rand.Read never returns an error (Go 1.24+).
	return Key{Name: name, Secret: secret}
}

// Identity returns the identity provider: values are stored in plain text.
func Identity() Provider { return identityProvider{} }

// AESCBC returns an aescbc provider with keys in order; the first key encrypts new writes.
// Secrets must be 16, 24 or 32 bytes.
func AESCBC(keys ...Key) Provider {
	return staticKeyProvider{kind: "aescbc", keys: keys, sizes: []int{16, 24, 32}}
}

// AESGCM returns an aesgcm provider with keys in order; the first key encrypts new writes.
// Secrets must be 16, 24 or 32 bytes.
func AESGCM(keys ...Key) Provider {
	return staticKeyProvider{kind: "aesgcm", keys: keys, sizes: []int{16, 24, 32}}
}

// Secretbox returns a secretbox provider with keys in order; the first key encrypts new writes.
// Secrets must be 32 bytes.
func Secretbox(keys ...Key) Provider {
	return staticKeyProvider{kind: "secretbox", keys: keys, sizes: []int{32}}
}

// KMSv2 returns a KMS v2 provider named name that talks to the plugin at endpoint
// ("unix:///path/to/socket"). A zero timeout leaves kube-apiserver's default (3 s).
func KMSv2(name, endpoint string, timeout time.Duration) Provider {
	return kmsV2Provider{name: name, endpoint: endpoint, timeout: timeout}
}

// Encryption is the content of an EncryptionConfiguration: which resources are encrypted and
// the ordered list of providers. Resources defaults to ["secrets"].
type Encryption struct {
	Resources []string
	Providers []Provider
}

// encryptionConfigYAML renders e as an EncryptionConfiguration file.
func encryptionConfigYAML(e Encryption) ([]byte, error) {
	if len(e.Providers) == 0 {
		return nil, errors.New("encryption config: no providers")
	}
	resources := e.Resources
	if len(resources) == 0 {
		resources = []string{"secrets"}
	}
	var b strings.Builder
	b.WriteString("apiVersion: apiserver.config.k8s.io/v1\n")
	b.WriteString("kind: EncryptionConfiguration\n")
	b.WriteString("resources:\n")
	b.WriteString("  - resources:\n")
	for _, r := range resources {
		if r == "" {
			return nil, errors.New("encryption config: empty resource name")
		}
		fmt.Fprintf(&b, "      - %s\n", quote(r))
	}
	b.WriteString("    providers:\n")
	for i, p := range e.Providers {
		if p == nil {
			return nil, fmt.Errorf("encryption config: provider %d is nil", i)
		}
		entry, err := p.providerYAML()
		if err != nil {
			return nil, fmt.Errorf("encryption config: provider %d: %w", i, err)
		}
		for j, line := range strings.Split(strings.TrimSuffix(entry, "\n"), "\n") {
			if j == 0 {
				b.WriteString("      - ")
			} else {
				b.WriteString("        ")
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return []byte(b.String()), nil
}

// quote returns s as a double-quoted YAML scalar (a JSON string is one).
func quote(s string) string {
	q, _ := json.Marshal(s) // marshalling a string cannot fail.
	return string(q)
}

type identityProvider struct{}

func (identityProvider) providerYAML() (string, error) { return "identity: {}", nil }

type staticKeyProvider struct {
	kind  string
	keys  []Key
	sizes []int
}

func (p staticKeyProvider) providerYAML() (string, error) {
	if len(p.keys) == 0 {
		return "", fmt.Errorf("%s: no keys", p.kind)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s:\n  keys:\n", p.kind)
	seen := make(map[string]bool, len(p.keys))
	for _, k := range p.keys {
		if k.Name == "" {
			return "", fmt.Errorf("%s: key with empty name", p.kind)
		}
		if seen[k.Name] {
			return "", fmt.Errorf("%s: duplicate key name %q", p.kind, k.Name)
		}
		seen[k.Name] = true
		if !slices.Contains(p.sizes, len(k.Secret)) {
			return "", fmt.Errorf("%s: key %q: secret is %d bytes, want one of %v", p.kind, k.Name, len(k.Secret), p.sizes)
		}
		fmt.Fprintf(&b, "    - name: %s\n      secret: %s\n", quote(k.Name), base64.StdEncoding.EncodeToString(k.Secret))
	}
	return b.String(), nil
}

type kmsV2Provider struct {
	name     string
	endpoint string
	timeout  time.Duration
}

func (p kmsV2Provider) providerYAML() (string, error) {
	switch {
	case p.name == "":
		return "", errors.New("kms v2: empty name")
	case strings.Contains(p.name, ":"):
		return "", fmt.Errorf("kms v2: name %q contains ':'", p.name)
	case !strings.HasPrefix(p.endpoint, "unix:///"):
		return "", fmt.Errorf("kms v2 %q: endpoint %q is not unix:///path", p.name, p.endpoint)
	case p.timeout < 0:
		return "", fmt.Errorf("kms v2 %q: negative timeout %v", p.name, p.timeout)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kms:\n  apiVersion: v2\n  name: %s\n  endpoint: %s\n", quote(p.name), quote(p.endpoint))
	if p.timeout > 0 {
		fmt.Fprintf(&b, "  timeout: %s\n", p.timeout)
	}
	return b.String(), nil
}
