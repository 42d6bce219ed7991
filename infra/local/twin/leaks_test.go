package twin

import (
	"encoding/base64"
	"slices"
	"testing"
)

func TestNeedleIndexFindsEveryFormOnce(t *testing.T) {
	var ix needleIndex
	value := []byte("\x00\x01binary-secret-value\xff")
	ix.add("token", []byte("CAIS0123456789abcdef"))
	ix.add("secret", value)
	ix.add("secret", []byte(base64.StdEncoding.EncodeToString(value)))
	ix.add("short", []byte("abc")) // too short to look for
	ix.add("same prefix", []byte("CAIS0123ffff"))

	text := []byte(`{"msg":"x","v":"` + base64.StdEncoding.EncodeToString(value) + `"} CAIS0123456789abcdef CAIS0123456789abcdef abc`)
	got := ix.find(text)
	slices.Sort(got)
	if want := []string{"secret", "token"}; !slices.Equal(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}
	if got := ix.find([]byte("CAIS0123ffff at the end")); !slices.Equal(got, []string{"same prefix"}) {
		t.Fatalf("found %v", got)
	}
	if got := ix.find([]byte("CAIS012")); len(got) != 0 {
		t.Fatalf("found %v in a text shorter than any needle", got)
	}
}
