package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/storagemode"
	"github.com/rekey-dev/rekey/shared/verify"
)

// TestTwinShortTimeoutResumesFromCheckpoints gives the off-peak function a 5 s Function Compute
// timeout over 5,000 stale Secrets while writers update, create and delete Secrets: several
// invocations finish the job, each resuming from the checkpoint the previous one saved before its
// deadline (none is killed), every Secret ends under the new version in etcd, holding its last
// write, and nothing deleted comes back. The function runs 2 patches at once (REKEY_CONCURRENCY)
// so that the job needs several invocations however fast the machine's pass is at 32 (a pass at
// 32 finished 4,000 of the 5,000 in the first invocation). How many invocations it takes depends
// on the machine; what must hold is that each one moves the job (tickWhileProgressing). It runs on
// the single twin: checkpoints do not depend on replicas (TestACKShapedTwin covers those), and on
// two replicas sharing 2 cores with 5,000 Secrets its 5 s invocations cost minutes of the suite.
func TestTwinShortTimeoutResumesFromCheckpoints(t *testing.T) {
	tw := startTwin(t, twin.Options{
		Single:   true,
		Timeouts: map[string]time.Duration{offpeakFn: 5 * time.Second},
		Env:      map[string]string{"REKEY_CONCURRENCY": "2"},
	})
	cs := typed(t, tw.Cluster)
	namespaces := []string{"short-1", "short-2", "short-3", "short-4"}
	const n = 5000
	last := createSecrets(t, cs, n, namespaces...)
	ctx := context.Background()
	v2, err := tw.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if jobs := pendingJobs(t, tw); len(jobs) != 1 || jobs[0].Version != v2 {
		t.Fatalf("pending jobs %+v, want one for %s", jobs, v2)
	}
	waitAPIServer(t, tw, v2)

	// Writers stop between calls, never during one, so the test knows every write that happened.
	var (
		mu                       sync.Mutex
		deleted                  = map[string]bool{}
		stopping                 atomic.Bool
		wg                       sync.WaitGroup
		writes, creates, deletes int
	)
	for w := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; !stopping.Load(); i++ {
				ns := namespaces[rng.IntN(len(namespaces))]
				k := fmt.Sprintf("%s/secret-%05d", ns, rng.IntN(n))
				_, name := splitKey(k)
				switch op := rng.IntN(10); {
				case op < 7:
					mu.Lock()
					gone := deleted[k]
					mu.Unlock()
					if _, ok := last[k]; gone || !ok {
						continue
					}
					s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						continue
					}
					v := randomBytes(t, 64)
					s.Data["v"] = v
					if _, err := cs.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err == nil {
						mu.Lock()
						last[k], writes = v, writes+1
						mu.Unlock()
					}
				case op < 9:
					name := fmt.Sprintf("new-%d-%d", w, i)
					v := randomBytes(t, 64)
					s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"v": v}}
					if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err == nil {
						mu.Lock()
						last[ns+"/"+name], creates = v, creates+1
						mu.Unlock()
					}
				default:
					if err := cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
						mu.Lock()
						deleted[k] = true
						delete(last, k)
						deletes++
						mu.Unlock()
					}
				}
				time.Sleep(5 * time.Millisecond) // a steady writer, not a load test
			}
		})
	}

	t0 := time.Now()
	calls := tickWhileProgressing(t, tw, v2, 300)
	stopping.Store(true)
	wg.Wait()
	t.Logf("%d invocations in %s finished the job; concurrent writers: %d updates, %d creates, %d deletes",
		len(calls), time.Since(t0).Round(time.Millisecond), writes, creates, deletes)
	if writes == 0 || deletes == 0 {
		t.Fatalf("the writers did not overlap the job (%d writes, %d deletes)", writes, deletes)
	}

	// Several invocations, none killed by the deadline, each resuming where the last one stopped.
	var partial, passInvocations int
	var passListed int64
	for _, c := range calls {
		if c.Result.TimedOut || c.Result.Error != nil {
			t.Fatalf("invocation %s: timed out %v, error %v: the function must stop before its deadline", c.Result.RequestID, c.Result.TimedOut, c.Result.Error)
		}
		r, _ := offpeakResult(t, c)
		for _, cl := range r.Clusters {
			for _, j := range cl.Jobs {
				d := jobDetail(t, j.Outcome.Detail)
				if j.Outcome.Status == "partial" {
					partial++
				}
				if d.Summary != nil {
					passInvocations++
					passListed += d.Summary.Total.Listed
				}
				cp := ""
				if d.Checkpoint != nil {
					cp = fmt.Sprintf("checkpoint %s listed %d after %d invocations", d.Checkpoint.Phase, d.Checkpoint.Counts.Listed, d.Checkpoint.Invocations)
				}
				t.Logf("job %s in %s: phase %s; %s", j.Outcome.Status, c.Result.Duration.Round(time.Millisecond), d.Phase, cp)
			}
		}
	}
	if partial < 2 {
		t.Fatalf("%d partial invocations: a 5 s timeout over %d Secrets should take several", partial, n)
	}
	// Resumed, not restarted: the pass invocations listed about one pass's worth of Secrets in all.
	if passListed > int64(n+creates)*3/2 {
		t.Fatalf("the pass invocations listed %d objects in all for %d Secrets: they restarted instead of resuming", passListed, n+creates)
	}
	t.Logf("pass: %d invocations listed %d objects in all", passInvocations, passListed)

	requireAllUnder(t, tw, v2, n)
	for _, ns := range namespaces {
		list, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
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
			if want, ok := last[k]; !ok || !bytes.Equal(sec.Data["v"], want) {
				t.Errorf("%s lost an update", k)
			}
		}
		for k := range last {
			if strings.HasPrefix(k, ns+"/") && !seen[k] {
				t.Errorf("%s is missing", k)
			}
		}
	}
	if leaks := tw.Leaks(nil); len(leaks) != 0 {
		t.Fatalf("leaks:\n%s", strings.Join(leaks, "\n"))
	}
}

// jobInfo is the part of a job's detail (shared/job.Outcome) the tests read.
type jobInfo struct {
	Status      string               `json:"status"`
	Reason      string               `json:"reason"`
	Phase       state.Phase          `json:"phase"`
	Summary     *reencrypt.Summary   `json:"summary"`
	Convergence *reencrypt.Summary   `json:"convergence"`
	Checkpoint  *state.Checkpoint    `json:"checkpoint"`
	Adoption    *adoption.Evidence   `json:"adoption"`
	Verdict     *storagemode.Verdict `json:"verdict"`
	Verify      *verify.Report       `json:"verify"`
}

func jobDetail(t *testing.T, detail any) jobInfo {
	t.Helper()
	b, err := json.Marshal(detail)
	if err != nil {
		t.Fatal(err)
	}
	var d jobInfo
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d
}
