package controlplane

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestEncryptionConfigYAML(t *testing.T) {
	key1 := Key{Name: "key1", Secret: bytes.Repeat([]byte{1}, 32)}
	key2 := Key{Name: "key2", Secret: bytes.Repeat([]byte{2}, 16)}
	got, err := encryptionConfigYAML(Encryption{Providers: []Provider{
		KMSv2("alibaba-kms", "unix:///run/kms.sock", 3*time.Second),
		AESCBC(key1, key2),
		Secretbox(key1),
		AESGCM(key2),
		KMSv2("no-timeout", "unix:///tmp/p.sock", 0),
		Identity(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - "secrets"
    providers:
      - kms:
          apiVersion: v2
          name: "alibaba-kms"
          endpoint: "unix:///run/kms.sock"
          timeout: 3s
      - aescbc:
          keys:
            - name: "key1"
              secret: AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=
            - name: "key2"
              secret: AgICAgICAgICAgICAgICAg==
      - secretbox:
          keys:
            - name: "key1"
              secret: AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=
      - aesgcm:
          keys:
            - name: "key2"
              secret: AgICAgICAgICAgICAgICAg==
      - kms:
          apiVersion: v2
          name: "no-timeout"
          endpoint: "unix:///tmp/p.sock"
      - identity: {}
`
	if string(got) != want {
		t.Errorf("config:\n%s\nwant:\n%s", got, want)
	}
}

func TestEncryptionConfigYAMLResources(t *testing.T) {
	got, err := encryptionConfigYAML(Encryption{Resources: []string{"secrets", "configmaps"}, Providers: []Provider{Identity()}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "      - \"secrets\"\n      - \"configmaps\"\n    providers:\n") {
		t.Errorf("resources not rendered:\n%s", got)
	}
}

func TestEncryptionConfigYAMLRejects(t *testing.T) {
	good := NewKey("good")
	for name, e := range map[string]Encryption{
		"no providers":      {},
		"nil provider":      {Providers: []Provider{nil}},
		"empty resource":    {Resources: []string{""}, Providers: []Provider{Identity()}},
		"aescbc no keys":    {Providers: []Provider{AESCBC()}},
		"aescbc short key":  {Providers: []Provider{AESCBC(Key{Name: "k", Secret: []byte("short")})}},
		"aescbc empty name": {Providers: []Provider{AESCBC(Key{Secret: good.Secret})}},
		"aescbc duplicate":  {Providers: []Provider{AESCBC(good, good)}},
		"secretbox 16":      {Providers: []Provider{Secretbox(Key{Name: "k", Secret: make([]byte, 16)})}},
		"kms no name":       {Providers: []Provider{KMSv2("", "unix:///s.sock", 0)}},
		"kms colon":         {Providers: []Provider{KMSv2("a:b", "unix:///s.sock", 0)}},
		"kms tcp endpoint":  {Providers: []Provider{KMSv2("a", "tcp://127.0.0.1:1", 0)}},
		"kms negative":      {Providers: []Provider{KMSv2("a", "unix:///s.sock", -time.Second)}},
	} {
		if _, err := encryptionConfigYAML(e); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestNewKey(t *testing.T) {
	a, b := NewKey("a"), NewKey("b")
	if a.Name != "a" || len(a.Secret) != 32 || len(b.Secret) != 32 {
		t.Fatalf("NewKey: got %q with %d bytes", a.Name, len(a.Secret))
	}
	if bytes.Equal(a.Secret, b.Secret) {
		t.Error("two keys have the same secret")
	}
}
