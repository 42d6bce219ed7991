package e2e

import (
	"context"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

var fiveNamespaces = []string{"team-a", "team-b", "team-c", "team-d", "team-e"}

// TestRotationRewritesEverySecret: 3,000 Secrets under key1, rotate to key2, one rewrite run, and
// etcd holds every Secret under key2; the counts match the scan; a second run rewrites nothing.
func TestRotationRewritesEverySecret(t *testing.T) {
	c, key1 := aescbcCluster(t)
	createSecrets(t, typed(t, c), 3000, fiveNamespaces...)
	before := scan(t, c)
	if before.Total < 3000 || before.ByClass["aescbc:key1"] != before.Total {
		t.Fatalf("before rotation: %+v, want every value under key1", before.ByClass)
	}
	rotate(t, c, key1)
	stale := scan(t, c).Stale()
	if stale != before.Total {
		t.Fatalf("after rotation %d values are stale, want %d", stale, before.Total)
	}

	s := mustRun(t, c.RestConfig("admin"), nil)
	after := scan(t, c)
	if after.Stale() != 0 || after.ByClass["aescbc:key2"] != after.Total {
		t.Fatalf("after run: %+v offenders %v, want every value under key2", after.ByClass, after.Offenders)
	}
	if s.Total.Rewritten != int64(stale) || s.Total.Listed != int64(after.Total) || s.Total.Failed != 0 || s.Total.Deleted != 0 {
		t.Fatalf("summary %+v does not match the scan (%d stale before, %d values after)", s.Total, stale, after.Total)
	}
	if s.Total.Current != s.Total.Listed-s.Total.Rewritten {
		t.Fatalf("summary %+v: current should be the rest", s.Total)
	}
	again := mustRun(t, c.RestConfig("admin"), nil)
	if again.Total.Rewritten != 0 || again.Total.Current != again.Total.Listed {
		t.Fatalf("second run %+v, want 0 rewritten (convergence)", again.Total)
	}
}

// TestOnlyStaleSecretsAreRewritten: after rotation half the Secrets are rewritten by someone else;
// the engine reports exactly the other half.
func TestOnlyStaleSecretsAreRewritten(t *testing.T) {
	c, key1 := aescbcCluster(t)
	cs := typed(t, c)
	data := createSecrets(t, cs, 600, "alpha", "beta")
	rotate(t, c, key1)
	names := make([]string, 0, len(data))
	for k := range data {
		names = append(names, k)
	}
	sort.Strings(names)
	ctx := context.Background()
	for _, k := range names[:300] {
		ns, name := splitKey(k)
		patch := []byte(`{"metadata":{"annotations":{"touched":"by-hand"}}}`)
		if _, err := cs.CoreV1().Secrets(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("hand rewrite %s: %v", k, err)
		}
	}
	r := scan(t, c)
	if r.Stale() != 300 {
		t.Fatalf("stale after hand rewrite = %d, want 300", r.Stale())
	}
	s := mustRun(t, c.RestConfig("admin"), nil)
	if s.Total.Rewritten != 300 || s.Total.Current != int64(r.Total-300) {
		t.Fatalf("summary %+v, want exactly the 300 stale rewritten", s.Total)
	}
	if after := scan(t, c); after.Stale() != 0 {
		t.Fatalf("still stale: %v", after.Offenders)
	}
}

func splitKey(k string) (string, string) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}

// TestScopeFilters: the server applies the namespace exclusion (a field selector) and the label
// selector; objects outside the scope stay stale until a run covers them.
func TestScopeFilters(t *testing.T) {
	c, key1 := aescbcCluster(t)
	createSecrets(t, typed(t, c), 600, "scope-a", "scope-b", "scope-c") // 200 each, half with label half=0
	rotate(t, c, key1)
	cfg := c.RestConfig("admin")
	s := mustRun(t, cfg, func(o *reencrypt.Options) {
		o.ExcludeNamespaces = []string{"scope-b", "scope-c"}
		o.LabelSelector = "half=0"
	})
	if s.Total.Listed != 100 || s.Total.Rewritten != 100 {
		t.Fatalf("scope-a, half=0: %+v, want 100 listed and rewritten", s.Total)
	}
	if r := scan(t, c); r.Stale() != 500 {
		t.Fatalf("%d stale after the scoped run, want 500", r.Stale())
	}
	s = mustRun(t, cfg, func(o *reencrypt.Options) { o.Namespaces = []string{"scope-b"} })
	if s.Total.Listed != 200 || s.Total.Rewritten != 200 {
		t.Fatalf("scope-b: %+v, want 200 rewritten", s.Total)
	}
	s = mustRun(t, cfg, nil)
	if s.Total.Rewritten != 300 || s.Total.Current != 300 {
		t.Fatalf("everything: %+v, want the last 300 rewritten and 300 current", s.Total)
	}
	if r := scan(t, c); r.Stale() != 0 {
		t.Fatalf("%d still stale", r.Stale())
	}
}

// TestAnnotateStrategy: the KMS v1 way. Every Secret gets the rotation annotation and is written
// under the new key, stale or not; a later run with a new time writes them all again.
func TestAnnotateStrategy(t *testing.T) {
	c, key1 := aescbcCluster(t)
	cs := typed(t, c)
	createSecrets(t, cs, 100, "annotate")
	rotate(t, c, key1)
	at := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	run := func(at time.Time) reencrypt.Summary {
		return mustRun(t, c.RestConfig("admin"), func(o *reencrypt.Options) {
			o.Strategy = reencrypt.Annotate
			o.Clock = clocktesting.NewFakePassiveClock(at)
			o.Namespaces = []string{"annotate"}
		})
	}
	if s := run(at); s.Total.Rewritten != 100 {
		t.Fatalf("first annotate run %+v, want 100 rewritten", s.Total)
	}
	if r := scan(t, c); r.Stale() != 0 {
		t.Fatalf("%d still stale", r.Stale())
	}
	sec, err := cs.CoreV1().Secrets("annotate").Get(context.Background(), "secret-00000", metav1.GetOptions{})
	if err != nil || sec.Annotations[reencrypt.RotationAnnotation] != "2026-11-27T03:00:00Z" {
		t.Fatalf("annotation = %q (%v)", sec.Annotations[reencrypt.RotationAnnotation], err)
	}
	if s := run(at.Add(time.Hour)); s.Total.Rewritten != 100 {
		t.Fatalf("annotate with a new time %+v, want every Secret written again", s.Total)
	}
}
