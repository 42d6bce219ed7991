package e2e

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// statusCounter counts the API server's answers by status code.
type statusCounter struct {
	next  http.RoundTripper
	count func(code int)
}

func (s statusCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(r)
	if err == nil {
		s.count(resp.StatusCode)
	}
	return resp, err
}

// TestEngineContinueTokensExpireOnEveryPage: etcd is compacted after every patch of a throttled
// run (one worker, pages of 10), so the continue token of every page is dead by the time it is
// used. The run completes anyway, with exact counts (no object counted twice), and etcd holds
// every Secret under the new key.
//
// The API server runs with ListFromCacheSnapshot off (its default before 1.34, e.g. on ACK 1.31-
// 1.33): paginated lists then continue from etcd, and a compaction expires their tokens at once.
// With snapshots on, the watch cache serves continuations and notices a compaction only within 15s.
func TestEngineContinueTokensExpireOnEveryPage(t *testing.T) {
	key1 := controlplane.NewKey("key1")
	c := controlplane.StartT(t, controlplane.Options{
		Encryption:          &controlplane.Encryption{Providers: []controlplane.Provider{controlplane.AESCBC(key1), controlplane.Identity()}},
		ExtraAPIServerFlags: []string{"--feature-gates=ListFromCacheSnapshot=false"},
	})
	const n, ns = 150, "pages"
	createSecrets(t, typed(t, c), n, ns)
	rotate(t, c, key1)
	if r := scanPrefix(t, c, ns); r.Total != n || r.Stale() != n {
		t.Fatalf("before the run: %+v, want %d stale", r.ByClass, n)
	}

	var gone atomic.Int64 // 410 answers: expired continue tokens
	cfg := c.RestConfig("admin")
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return statusCounter{next: rt, count: func(code int) {
			if code == http.StatusGone {
				gone.Add(1)
			}
		}}
	})
	var mu sync.Mutex
	var compactErr error
	compactions := 0
	compact := func(string, reencrypt.Outcome) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mu.Lock()
		defer mu.Unlock()
		resp, err := c.Etcd.Get(ctx, "rekey-e2e-compaction-probe")
		if err == nil {
			_, err = c.Etcd.Compact(ctx, resp.Header.Revision)
		}
		if err != nil && compactErr == nil {
			compactErr = err
		}
		compactions++
	}
	s := mustRun(t, cfg, func(o *reencrypt.Options) {
		o.Namespaces = []string{ns}
		o.PageSize = 10
		o.Concurrency = 1
		o.OnObject = compact
	})
	if compactErr != nil {
		t.Fatalf("compact etcd: %v", compactErr)
	}
	t.Logf("%d compactions, %d continue tokens expired", compactions, gone.Load())
	if gone.Load() <= 5 {
		t.Fatalf("only %d tokens expired; the test must expire more than the old restart cap (5)", gone.Load())
	}
	if s.Total != (reencrypt.Counts{Listed: n, Rewritten: n}) || !s.Complete {
		t.Fatalf("summary %+v complete=%v, want exactly %d listed and rewritten", s.Total, s.Complete, n)
	}
	if r := scanPrefix(t, c, ns); r.Total != n || r.Matching != n {
		t.Fatalf("after the run: %+v offenders %v, want all %d under key2", r.ByClass, r.Offenders, n)
	}
}
