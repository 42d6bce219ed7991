package kmsapi

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testMaterial(t testing.TB) []byte {
	t.Helper()
	m := make([]byte, 32)
	if _, err := rand.Read(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBlobRoundTripAndLayout(t *testing.T) {
	material := testMaterial(t)
	ctx, err := canonicalContext(`{"b":"2","a":"1"}`)
	if err != nil {
		t.Fatal(err)
	}
	if string(ctx) != `{"a":"1","b":"2"}` {
		t.Fatalf("canonical context %s", ctx)
	}
	const keyID, versionID = "3a6a031d-1111-4222-8333-444455556666", "v-0001"
	pt := []byte("secret payload")
	b, err := sealBlob(keyID, versionID, material, pt, ctx)
	if err != nil {
		t.Fatal(err)
	}
	header := "RKB\x01" + string(rune(len(keyID))) + keyID + string(rune(len(versionID))) + versionID
	if !strings.HasPrefix(string(b), header) || len(b) != len(header)+nonceSize+len(pt)+tagSize {
		t.Fatalf("blob layout: %q", b)
	}
	if bytes.Contains(b, pt) {
		t.Fatal("plaintext visible in the blob")
	}
	bl, err := decodeBlob(b)
	if err != nil {
		t.Fatal(err)
	}
	if bl.keyID != keyID || bl.versionID != versionID {
		t.Fatalf("decoded %q %q", bl.keyID, bl.versionID)
	}
	got, err := bl.open(material, ctx)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open = %q, %v", got, err)
	}

	// Every single-byte change is detected, in the header as much as in the body.
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x80
		bl, err := decodeBlob(c)
		if err != nil {
			continue
		}
		if _, err := bl.open(material, ctx); !errors.Is(err, errBlobAuth) {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	if _, err := bl.open(material, []byte(`{}`)); !errors.Is(err, errBlobAuth) {
		t.Fatal("opened under another context")
	}
	if _, err := bl.open(testMaterial(t), ctx); !errors.Is(err, errBlobAuth) {
		t.Fatal("opened with another key version's material")
	}
}

func TestCanonicalContext(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: "{}"},
		{in: "{}", want: "{}"},
		{in: ` { "z" : "1", "a":"2" } `, want: `{"a":"2","z":"1"}`},
		{in: `{"a":"1"}{"b":"2"}`, bad: true},
		{in: `null`, bad: true},
		{in: `[]`, bad: true},
		{in: `{"a":1}`, bad: true},
		{in: `{"a":{"b":"c"}}`, bad: true},
		{in: `{`, bad: true},
	} {
		got, err := canonicalContext(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("canonicalContext(%q) = %s, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("canonicalContext(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRotationInterval(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"604800s": 7 * 24 * time.Hour, "7d": 7 * 24 * time.Hour, "168h": 7 * 24 * time.Hour,
		"10080m": 7 * 24 * time.Hour, "730d": 730 * 24 * time.Hour, "365d": 365 * 24 * time.Hour,
		"6d": 0, "731d": 0, "": 0, "s": 0, "7": 0, "-7d": 0, "7w": 0, "99999999999999999999d": 0, "1e3s": 0,
	} {
		got, ok := parseRotationInterval(in)
		if ok != (want != 0) || (ok && got != want) {
			t.Errorf("parseRotationInterval(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	if got := formatRotationInterval(7 * 24 * time.Hour); got != "604800s" {
		t.Errorf("formatRotationInterval = %s", got)
	}
}

func TestPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"abcXYZ019-_.~": "abcXYZ019-_.~",
		"a b":           "a%20b",
		"a+b*c/d=e&f":   "a%2Bb%2Ac%2Fd%3De%26f",
		"ü":             "%C3%BC",
	} {
		if got := percentEncode(in); got != want {
			t.Errorf("percentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzDecodeBlob(f *testing.F) {
	material := testMaterial(f)
	good, err := sealBlob("key-1", "ver-1", material, []byte("pt"), []byte("{}"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("RKB\x01"))
	f.Add([]byte{})
	f.Add(append([]byte("RKB\x01\xff"), make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		bl, err := decodeBlob(b)
		if err != nil {
			return
		}
		if len(bl.keyID) == 0 || len(bl.versionID) == 0 || len(bl.nonce) != nonceSize || len(bl.sealed) < tagSize {
			t.Fatalf("decodeBlob accepted a malformed blob: %+v", bl)
		}
		pt, err := bl.open(material, []byte("{}"))
		if err == nil && !bytes.Equal(b, good) {
			t.Fatalf("a blob other than the sealed one opened: %q -> %q", b, pt)
		}
	})
}

// FuzzServeHTTP throws arbitrary query strings and form bodies at the handler:
// it must never panic and must always answer the JSON error shape (no request
// here is signed, so none can succeed).
func FuzzServeHTTP(f *testing.F) {
	srv, err := NewServer(Options{Credentials: []Credential{DevCredential()}})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []struct{ query, body string }{
		{"Action=DescribeKey&Version=2016-01-20&KeyId=alias/x", ""},
		{"Action=Decrypt&Version=2016-01-20&CiphertextBlob=UktCAQ==", ""},
		{"Action=LookupEvents&Version=2020-07-06&LookupAttribute.1.Key=EventName", ""},
		{"", "Action=Encrypt&Version=2016-01-20&AccessKeyId=LTAIkmslocaldev&Signature=abc"},
		{"Action=%zz", "%%%"},
		{"Action=ListKeys&Version=2016-01-20&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&Signature=AAAA&AccessKeyId=LTAIkmslocaldev&SignatureNonce=1&Timestamp=2025-01-01T00:00:00Z", ""},
	} {
		f.Add(seed.query, seed.body)
	}
	f.Fuzz(func(t *testing.T, query, body string) {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code < 400 || rec.Code > 599 {
			t.Fatalf("status %d for an unsigned request %q", rec.Code, query)
		}
		var e struct{ Code, Message, RequestId string }
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == "" || e.Message == "" || e.RequestId == "" {
			t.Fatalf("body %q (%v)", rec.Body.String(), err)
		}
	})
}
