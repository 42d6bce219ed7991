package twin

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func TestScannerFindsEveryFormAndCounts(t *testing.T) {
	s := NewScanner()
	value := []byte("\x00\x01secret-value-of-a-Secret\xff")
	s.AddValue("value of ns/a", value)
	s.AddCredential("bearer token", "tok-0123456789abcdef")
	s.AddCredential("too short", "abc")
	s.Scan("clean log", []byte(strings.Repeat("nothing to see here ", 100)))
	s.Scan("raw", append([]byte("x="), value...))
	s.Scan("base64", []byte(`{"v":"`+base64.StdEncoding.EncodeToString(value)+`"}`))
	s.Scan("base64url", []byte(base64.RawURLEncoding.EncodeToString(value)))
	s.Scan("hex", []byte("v="+hex.EncodeToString(value)))
	s.Scan("header", []byte("Authorization: Bearer tok-0123456789abcdef"))
	s.Scan("basic", []byte("Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte("tok-0123456789abcdef"))))
	want := []string{
		"base64 contains the value of ns/a", "base64url contains the value of ns/a", "basic contains the bearer token",
		"header contains the bearer token", "hex contains the value of ns/a", "raw contains the value of ns/a",
	}
	if got := s.Hits(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("hits:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	c := s.Counts()
	if c.Needles != 6 || c.Texts != 7 || c.Hits != 6 || c.Bytes < 2000 {
		t.Fatalf("counts %+v", c)
	}
	for _, h := range s.Hits() {
		if strings.Contains(h, "tok-") || strings.Contains(h, "secret-value") {
			t.Fatalf("a hit quotes the secret: %s", h)
		}
	}
}
