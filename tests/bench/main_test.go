package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/clientcmd"
)

// rawEnv makes the test binary the raw saturating client instead of running tests: the bench
// starts itself again with it, so the raw client is a process of its own, measured like the others.
const (
	rawEnv        = "REKEY_BENCH_RAW_CLIENT"
	rawWorkersEnv = "REKEY_BENCH_RAW_WORKERS"
)

func TestMain(m *testing.M) {
	if os.Getenv(rawEnv) != "" {
		n, err := rawClient(context.Background(), os.Getenv("KUBECONFIG"), os.Getenv(rawWorkersEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, "raw client:", err)
			os.Exit(1)
		}
		fmt.Println(n)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// rawClient is this machine's ceiling: it lists every Secret's metadata and sends each an empty
// merge patch from many workers, with no retries, no preconditions, no outcome bookkeeping. The
// API server stores a Secret read under an old key again even when the patch changes nothing.
func rawClient(ctx context.Context, kubeconfig, workers string) (int64, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return 0, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	w, err := strconv.Atoi(workers)
	if err != nil || w < 1 {
		return 0, fmt.Errorf("%s=%q: want a positive number", rawWorkersEnv, workers)
	}
	client, err := metadata.NewForConfig(cfg)
	if err != nil {
		return 0, fmt.Errorf("metadata client: %w", err)
	}
	api := client.Resource(secretsGVR)
	type ref struct{ ns, name string }
	items := make(chan ref, 2*w)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var patched atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range items {
				if _, err := api.Namespace(it.ns).Patch(ctx, it.name, types.MergePatchType, []byte("{}"), metav1.PatchOptions{}); err != nil {
					cancel(fmt.Errorf("patch %s/%s: %w", it.ns, it.name, err))
					continue
				}
				patched.Add(1)
			}
		}()
	}
	opts := metav1.ListOptions{Limit: 500}
	var listErr error
	for ctx.Err() == nil {
		page, err := api.List(ctx, opts)
		if err != nil {
			listErr = fmt.Errorf("list: %w", err)
			break
		}
		for _, m := range page.Items {
			items <- ref{m.Namespace, m.Name}
		}
		if page.Continue == "" {
			break
		}
		opts.Continue = page.Continue
	}
	close(items)
	wg.Wait()
	if listErr != nil {
		return patched.Load(), listErr
	}
	if err := context.Cause(ctx); err != nil {
		return patched.Load(), err
	}
	return patched.Load(), nil
}
