package reencrypt

import (
	"testing"
	"time"
)

// TestAnnotateDiffersWithinASecond: two annotate runs that start in the same second (a run right
// after another rotation) must send different values, or the second changes no object and, on
// KMS v1, re-encrypts nothing.
func TestAnnotateDiffersWithinASecond(t *testing.T) {
	first := time.Date(2026, 11, 28, 8, 52, 40, 100_000_000, time.UTC)
	second := first.Add(300 * time.Millisecond)
	a, err := patchBody(Annotate, "1", first)
	if err != nil {
		t.Fatal(err)
	}
	b, err := patchBody(Annotate, "1", second)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) == string(b) {
		t.Fatalf("both runs send %s", a)
	}
	if want := `{"metadata":{"annotations":{"encryption-key-rotation-time":"2026-11-28T08:52:40.1Z"}}}`; string(a) != want {
		t.Fatalf("patch %s, want %s", a, want)
	}
}
