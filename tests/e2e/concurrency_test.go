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

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// TestNoLostUpdates: writers change Secrets' data, create and delete Secrets while the engine
// runs. Afterwards every Secret holds its last write, nothing deleted came back, and etcd holds
// every Secret under key2.
func TestNoLostUpdates(t *testing.T) {
	c, key1 := aescbcCluster(t)
	cs := typed(t, c)
	namespaces := []string{"busy-1", "busy-2"}
	last := createSecrets(t, cs, 1500, namespaces...)
	rotate(t, c, key1)

	var mu sync.Mutex
	deleted := map[string]bool{}
	// Writers stop between calls, never during one: a call cut off by cancellation may still have
	// happened on the server, and the test must know every write that happened.
	var stopping atomic.Bool
	ctx := context.Background()
	var wg sync.WaitGroup
	var writes, creates, deletes int
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; !stopping.Load(); i++ {
				ns := namespaces[rng.IntN(len(namespaces))]
				switch op := rng.IntN(10); {
				case op < 7: // update data through a full read-modify-write (a real client's way)
					k := fmt.Sprintf("%s/secret-%05d", ns, rng.IntN(1500))
					mu.Lock()
					gone := deleted[k]
					mu.Unlock()
					if gone {
						continue
					}
					_, name := splitKey(k)
					s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						continue
					}
					v := randomBytes(t, 64)
					s.Data["v"] = v
					if _, err := cs.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err == nil {
						mu.Lock()
						last[k] = v
						writes++
						mu.Unlock()
					}
				case op < 9:
					name := fmt.Sprintf("new-%d-%d", w, i)
					v := randomBytes(t, 64)
					s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"v": v}}
					if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err == nil {
						mu.Lock()
						last[ns+"/"+name] = v
						creates++
						mu.Unlock()
					}
				default:
					k := fmt.Sprintf("%s/secret-%05d", ns, rng.IntN(1500))
					_, name := splitKey(k)
					if err := cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
						mu.Lock()
						deleted[k] = true
						delete(last, k)
						deletes++
						mu.Unlock()
					}
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the writers get going before the engine starts
	s := mustRun(t, c.RestConfig("admin"), func(o *reencrypt.Options) { o.Concurrency = 8 })
	stopping.Store(true)
	wg.Wait()
	t.Logf("concurrent writers: %d updates, %d creates, %d deletes; engine conflicts %d", writes, creates, deletes, s.Conflicts)
	if s.Total.Failed != 0 {
		t.Fatalf("failures: %+v", s.Failures)
	}
	if writes == 0 || deletes == 0 {
		t.Fatalf("the writers did not overlap the run (%d writes, %d deletes)", writes, deletes)
	}

	for _, ns := range namespaces {
		list, err := cs.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, sec := range list.Items {
			k := ns + "/" + sec.Name
			seen[k] = true
			if deleted[k] {
				t.Errorf("%s was deleted but is back", k)
				continue
			}
			want, ok := last[k]
			if !ok {
				t.Errorf("%s exists but was never written", k)
				continue
			}
			if !bytes.Equal(sec.Data["v"], want) {
				t.Errorf("%s lost an update", k)
			}
		}
		for k := range last {
			if ns2, _ := splitKey(k); ns2 == ns && !seen[k] {
				t.Errorf("%s is missing", k)
			}
		}
	}
	if r := scan(t, c); r.Stale() != 0 {
		t.Fatalf("%d Secrets are not under key2: %v", r.Stale(), r.Offenders)
	}
}
