package job

import (
	"testing"
	"time"

	"github.com/rekey-dev/rekey/shared/kms"
)

func TestPredecessorOf(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := func(id string, d time.Duration) kms.KeyVersion {
		return kms.KeyVersion{KeyVersionID: id, CreationDate: t0.Add(d)}
	}
	cases := []struct {
		name     string
		versions []kms.KeyVersion
		primary  string
		want     string
	}{
		{"listed newest first", []kms.KeyVersion{v("v3", 2*time.Hour), v("v1", 0), v("v2", time.Hour)}, "v3", "v2"},
		{"primary is the first version", []kms.KeyVersion{v("v1", 0)}, "v1", ""},
		{"primary not the newest", []kms.KeyVersion{v("v1", 0), v("v2", time.Hour), v("v3", 2*time.Hour)}, "v2", "v1"},
		{"two candidates created at once", []kms.KeyVersion{v("a", 0), v("b", 0), v("v3", time.Hour)}, "v3", ""},
		{"primary unknown", []kms.KeyVersion{v("v1", 0)}, "v9", ""},
	}
	for _, c := range cases {
		if got, _ := predecessorOf(c.versions, c.primary); got != c.want {
			t.Errorf("%s: predecessor %q, want %q", c.name, got, c.want)
		}
	}
}
