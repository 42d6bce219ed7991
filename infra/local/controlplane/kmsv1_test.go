package controlplane

import (
	"strings"
	"testing"
	"time"
)

func TestKMSv1ProviderYAML(t *testing.T) {
	got, err := KMSv1("alibaba-kms-v1", "unix:///run/kms-v1.sock", 500, 3*time.Second).providerYAML()
	if err != nil {
		t.Fatal(err)
	}
	want := "kms:\n  apiVersion: v1\n  name: \"alibaba-kms-v1\"\n  endpoint: \"unix:///run/kms-v1.sock\"\n  cachesize: 500\n  timeout: 3s\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got, _ := KMSv1("p", "unix:///s", 0, 0).providerYAML(); strings.Contains(got, "cachesize") || strings.Contains(got, "timeout") {
		t.Errorf("zero cache size and timeout must be left to the API server: %s", got)
	}
	for _, p := range []Provider{KMSv1("", "unix:///s", 0, 0), KMSv1("a:b", "unix:///s", 0, 0), KMSv1("p", "tcp://x", 0, 0),
		KMSv1("p", "unix:///s", -1, 0), KMSv1("p", "unix:///s", 0, -time.Second)} {
		if _, err := p.providerYAML(); err == nil {
			t.Errorf("%+v: want an error", p)
		}
	}
}
