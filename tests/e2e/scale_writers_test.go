package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/infra/local/seed"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// TestScaleWritersNoLostUpdates: 20,000 Secrets under key1, key2 made the write key, then one
// engine pass while 4 writers update (a full read-modify-write, as real clients do), create and
// delete Secrets as fast as they can. Afterwards every surviving Secret holds its last write,
// every Secret created exists, nothing deleted came back, and a raw etcd scan finds every Secret
// under key2.
func TestScaleWritersNoLostUpdates(t *testing.T) {
	const n = 20000
	t0 := time.Now()
	c, key1 := aescbcCluster(t)
	cs := typed(t, c)
	namespaces := []string{"scale-1", "scale-2", "scale-3", "scale-4"}
	last, err := seed.Secrets(context.Background(), cs, seed.Options{Count: n, Namespaces: namespaces, Workers: 32})
	if err != nil {
		t.Fatal(err)
	}
	tSeed := time.Since(t0)
	rotate(t, c, key1)
	tRotate := time.Since(t0)

	w := startWriters(t, cs, namespaces, n, last, 4)
	// Let the writers get going before the pass starts (bounded wait on their progress).
	deadline := time.Now().Add(10 * time.Second)
	for w.ops.Load() < 50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s := mustRun(t, c.RestConfig("admin"), func(o *reencrypt.Options) { o.Concurrency = 16; o.PageSize = 500 })
	w.stop()
	tRun := time.Since(t0)
	t.Logf("scale: %d Secrets seeded in %s; rotation done at %s; pass %.1fs (%.0f obj/s, %d conflicts, %d retries, %d deleted under it)",
		n, tSeed.Round(time.Millisecond), tRotate.Round(time.Millisecond), s.DurationSeconds, s.ObjectsPerSecond, s.Conflicts, s.Retries, s.Total.Deleted)
	t.Logf("scale: concurrent writers during the pass: %d updates, %d creates, %d deletes", w.writes, w.creates, w.deletes)
	if !s.OK() {
		t.Fatalf("pass not OK: %+v, failures %+v, stop %q", s.Total, s.Failures, s.StopReason)
	}
	if s.Total.Listed < n/2 || s.Total.Rewritten < n/2 {
		t.Fatalf("pass %+v: expected most of the %d stale Secrets listed and rewritten", s.Total, n)
	}
	if w.writes == 0 || w.deletes == 0 || w.creates == 0 {
		t.Fatalf("the writers did not overlap the pass (%d writes, %d creates, %d deletes)", w.writes, w.creates, w.deletes)
	}

	w.check(t, cs)
	r := scan(t, c)
	if r.Stale() != 0 {
		t.Fatalf("%d of %d Secrets are not under key2 in etcd: %v", r.Stale(), r.Total, r.Offenders)
	}
	if want := len(w.last); r.Total != want {
		t.Fatalf("etcd holds %d Secrets, the writers' record says %d", r.Total, want)
	}
	t.Logf("scale: etcd scan: %d Secrets, all under key2; total test time %s (checks took %s)",
		r.Total, time.Since(t0).Round(time.Millisecond), (time.Since(t0) - tRun).Round(time.Millisecond))
}

// scaleWriters update, create and delete Secrets concurrently and record every write that happened.
// They stop between calls, never during one: a call cut off by cancellation may still have
// happened on the server, and the test must know every write that did.
type scaleWriters struct {
	mu                       sync.Mutex
	last                     map[string][]byte // "ns/name" -> the data of its last write
	deleted                  map[string]bool
	writes, creates, deletes int
	ops                      atomic.Int64
	stopping                 atomic.Bool
	wg                       sync.WaitGroup
	namespaces               []string
}

// startWriters starts k writers over the Secrets secret-00000..secret-<n-1> spread round-robin over
// namespaces (as seed creates them); last is the seeded data, which the writers then own.
func startWriters(t *testing.T, cs kubernetes.Interface, namespaces []string, n int, last map[string][]byte, k int) *scaleWriters {
	w := &scaleWriters{last: last, deleted: map[string]bool{}, namespaces: namespaces}
	ctx := context.Background()
	for id := range k {
		w.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(id), 20000))
			for i := 0; !w.stopping.Load(); i++ {
				w.ops.Add(1)
				idx := rng.IntN(n)
				ns := namespaces[idx%len(namespaces)]
				name := fmt.Sprintf("secret-%05d", idx)
				key := ns + "/" + name
				switch op := rng.IntN(10); {
				case op < 7: // update data through a full read-modify-write
					w.mu.Lock()
					gone := w.deleted[key]
					w.mu.Unlock()
					if gone {
						continue
					}
					s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						continue
					}
					v := randomBytes(t, 64)
					s.Data["v"] = v
					if _, err := cs.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err == nil {
						w.mu.Lock()
						w.last[key], w.writes = v, w.writes+1
						w.mu.Unlock()
					}
				case op < 9:
					name := fmt.Sprintf("new-%d-%d", id, i)
					v := randomBytes(t, 64)
					s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"v": v}}
					if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err == nil {
						w.mu.Lock()
						w.last[ns+"/"+name], w.creates = v, w.creates+1
						w.mu.Unlock()
					}
				default:
					if err := cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
						w.mu.Lock()
						w.deleted[key] = true
						delete(w.last, key)
						w.deletes++
						w.mu.Unlock()
					}
				}
			}
		})
	}
	return w
}

// stop stops the writers and waits for them.
func (w *scaleWriters) stop() {
	w.stopping.Store(true)
	w.wg.Wait()
}

// check lists every Secret of the namespaces: each holds its last write, none deleted came back,
// none is missing. Call it after stop.
func (w *scaleWriters) check(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	seen := map[string]bool{}
	lost, back, unknown := 0, 0, 0
	for _, ns := range w.namespaces {
		opts := metav1.ListOptions{Limit: 2000}
		for {
			list, err := cs.CoreV1().Secrets(ns).List(context.Background(), opts)
			if err != nil {
				t.Fatalf("list %s: %v", ns, err)
			}
			for _, sec := range list.Items {
				k := ns + "/" + sec.Name
				seen[k] = true
				want, ok := w.last[k]
				switch {
				case w.deleted[k]:
					back++
					if back <= 5 {
						t.Errorf("%s was deleted but is back", k)
					}
				case !ok:
					unknown++
					if unknown <= 5 {
						t.Errorf("%s exists but was never written", k)
					}
				case !bytes.Equal(sec.Data["v"], want):
					lost++
					if lost <= 5 {
						t.Errorf("%s lost an update", k)
					}
				}
			}
			if list.Continue == "" {
				break
			}
			opts.Continue = list.Continue
		}
	}
	missing := 0
	for k := range w.last {
		if !seen[k] {
			missing++
			if missing <= 5 {
				t.Errorf("%s is missing", k)
			}
		}
	}
	t.Logf("scale: %d Secrets checked against their last write: %d lost updates, %d deleted ones back, %d unknown, %d missing",
		len(seen), lost, back, unknown, missing)
	if lost+back+unknown+missing > 0 {
		t.FailNow()
	}
}
